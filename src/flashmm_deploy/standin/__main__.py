"""``python3 -m flashmm_deploy.standin``: the image's command."""

import sys

from flashmm_deploy.standin.app import main

sys.exit(main())
