"""Expected failures: one line on stderr and the class's exit code (the README's table)."""


class JobError(Exception):
    """An expected failure: the message is shown to the user as it is."""

    exit_code = 2  # bad data, options or paths (click uses 2 for usage too)


class DataError(JobError):
    """A data file that is missing, malformed or fails its checksum."""

    def __init__(self, source: object, problem: str):
        super().__init__(f"{source}: {problem}")


class DataUnavailable(JobError):
    exit_code = 3  # no data source could be reached


class Preempted(JobError):
    exit_code = 75  # SIGTERM: the backup is saved, rerun the same command (EX_TEMPFAIL)


class Interrupted(JobError):
    exit_code = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class WorkerLost(Preempted):
    """Another worker of a multi-worker run stopped answering: rerun to resume."""


class OutputError(JobError):
    exit_code = 74  # EX_IOERR: no space left, a read-only file system, an I/O error


class NotBlessed(JobError):
    exit_code = 4  # the run finished, but the quality gate kept its model from export
