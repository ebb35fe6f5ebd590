"""genkit-flows: normalising flows on the latent space of genkit VAEs.

Importing the package registers ``posterior=planar`` and ``prior=realnvp``; its
``conf/`` folder adds ``experiment=flows`` to genkit's Hydra search path.
"""

from genkit_flows.parts import PlanarFlowPosterior, RealNVPPrior
from genkit_flows.transforms import AffineCouplingTransform, PlanarTransform

__version__ = "0.1.0"
__all__ = ["AffineCouplingTransform", "PlanarFlowPosterior", "PlanarTransform", "RealNVPPrior"]
