"""`python -m distill_mos.finetune`: see `distill_mos.finetune.cli`."""

import sys

from .cli import main

sys.exit(main())
