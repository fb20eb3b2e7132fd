import sys

from deploy.backup.cli import main

sys.exit(main())
