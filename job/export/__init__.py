"""The SavedModel that TensorFlow Serving loads, and the contract its clients rely on.

- ``contract``: signature, input and output names and limits; plain constants, no imports,
  so the clients in ``serving/`` read them without loading TensorFlow.
- ``signatures``: the serving graphs (preprocessing included) around the trained model.
- ``savedmodel``: numbered version folders written atomically, warm-up requests, the run's
  record, and reading an export back.

The job writes the export and the clients in ``serving/`` read its contract: ``serving``
imports from ``job``, never the other way round.
"""
