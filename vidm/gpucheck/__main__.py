import sys

from vidm.gpucheck.runner import main

sys.exit(main())
