import sys

from services.jobs.cli import main

sys.exit(main())
