"""Moved to `foundation.clients.agent` (the clients live below every service); this name stays as an alias."""

import sys

from foundation.clients import agent

sys.modules[__name__] = agent
