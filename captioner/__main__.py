"""``python -m captioner`` (also what ``torchrun -m captioner`` runs)."""

import sys

from .cli import main

sys.exit(main())
