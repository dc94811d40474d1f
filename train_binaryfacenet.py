"""``zenml pipeline run train_binaryfacenet -c configs/demo.yaml``, the bare name.

ZenML imports a source without a dot as a module and wants that object to be a pipeline, so
this module replaces itself in ``sys.modules`` by the pipeline (``pipelines.train_binaryfacenet``,
which stays the dotted form). Importing it from Python gives the pipeline too.
"""

import sys

from pipelines import train_binaryfacenet

sys.modules[__name__] = train_binaryfacenet
