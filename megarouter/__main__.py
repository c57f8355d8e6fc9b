import sys

from megarouter.cli import main

sys.exit(main())
