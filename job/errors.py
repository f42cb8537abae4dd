"""Expected failures the CLI turns into one line on stderr and a documented exit code."""

# Exit codes: the README's table, checked against these by tests/test_cli.py. Both CLIs keep
# them (serving imports this module, which imports nothing).
EXIT_BAD_INPUT = 2  # bad data, bad options, unwritable paths (click uses 2 for usage too)
EXIT_DATA_UNAVAILABLE = 3  # no data source could be reached
EXIT_NOT_BLESSED = 4  # trained and reported, but the quality gate kept it from export
EXIT_IO_ERROR = 74  # a write failed: no space, read-only or failing storage (EX_IOERR)
EXIT_PREEMPTED = 75  # SIGTERM: the backup is saved, rerun the same command to resume (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class JobError(Exception):
    """An expected failure: the message is shown to the user as it is."""

    exit_code = EXIT_BAD_INPUT


class DataError(JobError):
    """A data file that is missing, malformed or fails its checksum."""

    def __init__(self, source: object, problem: str):
        super().__init__(f"{source}: {problem}")


class DataUnavailable(JobError):
    exit_code = EXIT_DATA_UNAVAILABLE


class Preempted(JobError):
    exit_code = EXIT_PREEMPTED


class Interrupted(JobError):
    exit_code = EXIT_INTERRUPTED


class WorkerLost(Preempted):
    """Another worker of a multi-worker run stopped answering: rerun to resume."""


class OutputError(JobError):
    """Writing an output failed (no space left, a read-only file system, an I/O error)."""

    exit_code = EXIT_IO_ERROR


class NotBlessed(JobError):
    """The run finished, but its model did not pass the quality gate: no version written."""

    exit_code = EXIT_NOT_BLESSED
