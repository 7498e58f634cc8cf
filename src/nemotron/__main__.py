import sys

from nemotron.cli.main import main

sys.exit(main())
