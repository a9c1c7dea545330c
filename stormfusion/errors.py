"""The one exception type users see.

Every check of user input (files, keys, values) raises :class:`StormFusionError` with a
message that names the file, key or value and says what is wrong. The command line turns
it into one line on stderr and exit status 2, without a traceback. Operating-system errors
(:class:`OSError`: no space left, read-only or missing folder, permission) become one line
too (:func:`describe_os_error`), with exit status 1.
"""

from __future__ import annotations

import os


class StormFusionError(Exception):
    """Bad input or an unrecoverable condition the user can act on."""

    def __init__(self, *args: object) -> None:
        # A DataLoader worker's error comes back re-raised with the worker's traceback as
        # its message ("Caught StormFusionError in DataLoader worker process N. Original
        # Traceback ..."): keep the original one-line message, which ends that traceback.
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(_FROM_WORKER):
            _, sep, message = args[0].rpartition(f"{__name__}.StormFusionError: ")
            if sep:
                args = (message.strip(),)
        super().__init__(*args)


_FROM_WORKER = "Caught StormFusionError in DataLoader worker process"


def describe_os_error(exc: OSError) -> str:
    """One line naming the path(s) and the cause of an operating-system error.

    ``OSError(28, 'No space left on device', 'out/x.zarr')`` gives
    ``out/x.zarr: No space left on device``; a rename names both paths.
    """
    cause = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    if exc.errno and len(cause) > 240:  # a library's report (h5py) of a plain errno
        cause = os.strerror(exc.errno)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return cause
    return f"{' -> '.join(paths)}: {cause}"
