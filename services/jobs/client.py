"""Moved to `foundation.clients.jobs` (the clients live below every service); this name stays as an alias."""

import sys

from foundation.clients import jobs

sys.modules[__name__] = jobs
