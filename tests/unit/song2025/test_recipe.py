"""The song2025 recipe loads into the shared Recipe model; farina2023 keeps its defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icibenefit.errors import ConfigurationError
from icibenefit.pipeline.radiomics_features import load_params
from icibenefit.training.recipes import Recipe, available_recipes, load_recipe


def test_song2025_recipe() -> None:
    recipe = load_recipe("song2025")
    assert {"farina2023", "song2025"} <= set(available_recipes())
    assert recipe.endpoints == ("os12", "os36", "pfs12", "pfs36")
    assert recipe.sources == ("clinical", "radiomics", "unet")
    assert recipe.kinds == ("baseline",)
    assert (recipe.split.scheme, recipe.cv.scheme) == ("none", "nested")
    assert (recipe.cv.outer_folds, recipe.cv.folds) == (5, 5)
    assert recipe.imaging.timepoints == "baseline"
    assert recipe.imaging.robustness is False
    served = [spec for spec in recipe.ensembles if spec.served]
    assert [spec.sources for spec in served] == [("clinical", "radiomics", "unet")]


def test_lifex_parameter_file_has_the_lifex_families_on_the_original_image() -> None:
    from importlib import resources

    name = load_recipe("song2025").imaging.radiomics_params
    params = load_params(resources.files("icibenefit.pipeline") / name)
    assert list(params["imageType"]) == ["Original"]
    assert set(params["featureClass"]) == {
        "shape",  # LIFEx SHAPE
        "firstorder",  # CONVENTIONAL + HISTO
        "glcm",
        "glrlm",
        "ngtdm",  # NGLDM (Amadasun)
        "gldm",  # NGLDM (IBSI dependence matrix)
        "glszm",  # GLZLM
    }
    assert params["setting"]["normalize"] is False


def test_farina2023_keeps_its_holdout_single_cv_and_robust_radiomics() -> None:
    recipe = load_recipe("farina2023")
    assert (recipe.split.scheme, recipe.cv.scheme, recipe.cv.folds) == ("holdout", "single", 3)
    assert recipe.imaging.timepoints == "all"
    assert recipe.imaging.radiomics_params == "radiomics_params.yaml"
    assert recipe.imaging.robustness is True
    assert not any(spec.served for spec in recipe.ensembles)


def test_a_recipe_file_can_adapt_a_shipped_recipe(tmp_path: Path) -> None:
    document = load_recipe("song2025").model_dump(mode="json")
    document["unet"]["epochs"] = 2
    path = tmp_path / "song2025-small.yaml"
    path.write_text(yaml.safe_dump(document))
    recipe = load_recipe(str(path))
    assert recipe.name == "song2025"
    assert recipe.unet.epochs == 2


def test_a_holdout_split_cannot_go_with_nested_cv() -> None:
    document = load_recipe("song2025").model_dump()
    with pytest.raises(ValueError, match="nested"):
        Recipe.model_validate(document | {"split": {"scheme": "holdout"}})
    with pytest.raises(ConfigurationError):
        load_recipe("song2026")
