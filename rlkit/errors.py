"""The user-input errors the command line reports as one line with exit code 2 (no traceback)."""


class ConfigError(ValueError):
    """A bad experiment, option or argument; the message names the file and key."""


class DiskFull(RuntimeError):
    """Writing into the run dir failed for want of space (exit code 1; a re-run resumes)."""


def disk_full(e: BaseException, folder) -> bool:
    """ENOSPC anywhere in the exception chain, or almost no space left where the run writes (torch.save
    reports a full disk only as a failed or short write)."""
    import errno
    import shutil

    cause = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC or "No space left on device" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False
