import sys

from geospot.cli import main

sys.exit(main())
