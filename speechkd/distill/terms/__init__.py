"""Distillation beyond posterior matching: objective terms by what the student mimics.

Grouped as in Sarfraz et al. 2020: the teacher's representation space
(:mod:`.representation`: hint, activation energy), its decision boundary
(:mod:`.boundary`), the relations between samples (:mod:`.relational`), and a
cohort of students without a static teacher (:mod:`.mutual`). Each is an
:class:`~speechkd.distill.objectives.ObjectiveTerm`, declared in the YAML's
``objective`` beside ``ctc`` and ``kd`` with its weight.
"""

from speechkd.distill.terms.boundary import BoundarySupportKL
from speechkd.distill.terms.mutual import CohortEnsemble, MutualLearning
from speechkd.distill.terms.relational import RelationalKD, SimilarityPreserving
from speechkd.distill.terms.representation import ActivationEnergy, HintLoss

__all__ = [
    "ActivationEnergy",
    "BoundarySupportKL",
    "CohortEnsemble",
    "HintLoss",
    "MutualLearning",
    "RelationalKD",
    "SimilarityPreserving",
]
