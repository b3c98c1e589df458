import numpy as np
import pytest
from unit.reporting.factories import Case

from icibenefit.errors import ReportError
from icibenefit.reporting.key_images import segment_masks, trace_outline, tumour_geometry


@pytest.fixture(scope="module")
def case() -> Case:
    return Case(n_followups=0)


def test_outline_of_a_square_runs_along_its_pixel_edges():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:5, 3:7] = True  # rows 2-4, columns 3-6
    outline = trace_outline(mask)
    assert np.array_equal(outline[0], outline[-1])
    assert outline[:, 0].min() == pytest.approx(3.0)
    assert outline[:, 0].max() == pytest.approx(7.0)
    assert outline[:, 1].min() == pytest.approx(2.0)
    assert outline[:, 1].max() == pytest.approx(5.0)


def test_empty_mask_has_no_outline():
    with pytest.raises(ReportError):
        trace_outline(np.zeros((4, 4), dtype=bool))


def test_masks_map_seg_frames_to_their_ct_images(case):
    [seg] = case.segmentations
    masks = segment_masks(seg)
    assert set(masks) == {str(ds.SOPInstanceUID) for ds in case.images}
    assert all(int(m.sum()) == 16 for m in masks.values())
    assert segment_masks(seg, segment_number=2) == {}


def test_geometry_with_and_without_pixel_data(case):
    [seg] = case.segmentations
    traced = tumour_geometry(case.images, seg)
    assert traced.traced
    assert traced.volume_mm3 == pytest.approx(96.0)
    assert str(traced.key_image.SOPInstanceUID) in {str(ds.SOPInstanceUID) for ds in case.images}
    header = seg.copy()
    del header.PixelData
    framed = tumour_geometry(case.images, header)
    assert not framed.traced
    assert framed.volume_mm3 is None
    assert framed.outline.tolist() == [[0, 0], [16, 0], [16, 16], [0, 16], [0, 0]]
    middle = tumour_geometry(case.images, None)
    assert middle.key_image.InstanceNumber == 2
