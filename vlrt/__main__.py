import sys

from vlrt.cli.main import main

sys.exit(main())
