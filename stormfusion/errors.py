"""The one exception type users see.

Every check of user input (files, keys, values) raises :class:`StormFusionError` with a
message that names the file, key or value and says what is wrong. The command line turns
it into one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations


class StormFusionError(Exception):
    """Bad input or an unrecoverable condition the user can act on."""
