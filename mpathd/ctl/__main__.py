import sys

from .ipmpctl import main

sys.exit(main())
