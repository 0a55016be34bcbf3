"""WiSE-FT (Wortsman et al., CVPR 2022) with alpha chosen on validation data: the merge
(:mod:`mcip.wise.merge`, ``mcip merge``), the val curve over an alpha grid (:mod:`mcip.wise.curve`), how
alpha is chosen and its settings checked, guarded selections included (:mod:`mcip.wise.select`), the val
images encoded once per alpha (:mod:`mcip.wise.encode`) and the curve's plot (:mod:`mcip.wise.plot`). A
pipeline's ``wise`` step is :mod:`mcip.stages.wise_step`; the weight averaging itself is
:mod:`mcip.models.merge`.
"""
