"""The explicit allow-list of types a bundle's skops files may contain.

skops refuses to build any type it does not trust by default (scikit-learn's
own estimators are trusted by skops itself); everything else our pipelines use
must be named here. A bundle that needs a type outside this list is rejected
when it is *written*, so the list cannot silently fall behind the training code.
Never replace this with ``trusted=True`` or with pickle: a bundle may come from
another site, and unpickling it would run arbitrary code.
"""

from __future__ import annotations

TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        # numpy internals that appear in fitted arrays
        "numpy.dtype",
        # imbalanced-learn: the pipeline and the samplers the method uses
        "imblearn.pipeline.Pipeline",
        "imblearn.over_sampling._smote.base.SMOTE",
        "imblearn.over_sampling._smote.base.SMOTENC",
        "imblearn.over_sampling._smote.filter.BorderlineSMOTE",
        "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
        "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
        # scikit-learn score functions passed to selectors
        "sklearn.feature_selection._univariate_selection.f_classif",
        "sklearn.feature_selection._univariate_selection.chi2",
        "sklearn.feature_selection._mutual_info.mutual_info_classif",
        # scikit-learn Cython internals of forests and neighbour searches
        "sklearn.tree._tree.Tree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64",
        # icibenefit's own transformers (scikit-learn estimator contract, plain attributes)
        "icibenefit.pipeline.clinical_features.KMeansImputer",
        "icibenefit.pipeline.delta.DeltaClipper",
        "icibenefit.pipeline.normalization.IntensityNormalizer",
    }
)
