"""The code of a logged segmentation model, run by MLflow when it loads one; never imported.

MLflow's "models from code": the logged model carries this file and the pipeline package instead
of a pickled Python object, so loading it unpickles nothing. See
`pipeline.tracking.models.log_segmentation_model`.
"""

from pipeline.tracking.models import declare_segmentation_model

declare_segmentation_model()
