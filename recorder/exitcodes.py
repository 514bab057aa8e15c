"""Process exit codes, named so that systemd units, scripts and people can tell them apart."""

OK = 0
"""A clean stop."""
BAD_CONFIG = 2
"""Bad configuration or arguments; the message names the key and why."""
STARTUP_FAILURE = 3
"""Could not start. An unreachable database or exchange is not this: the daemon waits, retries."""
