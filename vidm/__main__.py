import sys

from vidm.cli import main

sys.exit(main())
