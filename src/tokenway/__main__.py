import sys

from tokenway.cli import main

sys.exit(main())
