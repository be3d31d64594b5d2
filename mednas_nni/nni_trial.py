"""The nnictl trial command ``python -m mednas_nni.nni_trial`` (see :mod:`mednas_nni.engines.trial`)."""
import sys

from mednas_nni.engines.trial import main

if __name__ == "__main__":
    sys.exit(main())
