"""Segmentation meter and Cityscapes iIoU against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pag_model.metrics import AVERAGE_INSTANCE_SIZE, CityscapesIIoU, SegmentationMeter


def test_iou_accuracy_by_hand_with_ignore_and_absent_classes() -> None:
    # 4 classes; class 3 never appears. 255 pixels are ignored whatever is predicted.
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 3, 2]]])
    meter = SegmentationMeter(4, class_names=["a", "b", "c", "d"])
    meter.update(pred, target)
    result = meter.compute()
    # Valid pixels: 6. TP: a 1, b 2, c 1 -> pixel_acc 4/6.
    # a: TP 1, FP 1 (c->a), FN 1 (a->b): 1/3.  b: TP 2, FP 1, FN 0: 2/3.  c: TP 1, FN 1: 1/2.
    assert result["pixel_acc"] == pytest.approx(4 / 6)
    assert result["iou/a"] == pytest.approx(1 / 3)
    assert result["iou/b"] == pytest.approx(2 / 3)
    assert result["iou/c"] == pytest.approx(1 / 2)
    assert math.isnan(result["iou/d"])
    assert result["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # Per-class accuracy over classes in the ground truth: a 1/2, b 2/2, c 1/2.
    assert result["mean_acc"] == pytest.approx(2 / 3)


def test_scores_are_argmaxed_and_numpy_is_accepted() -> None:
    scores = np.zeros((1, 3, 1, 3), dtype=np.float32)
    scores[0, 2, 0, 0] = scores[0, 1, 0, 1] = scores[0, 0, 0, 2] = 1.0
    meter = SegmentationMeter(3)
    meter.update(scores, np.array([[[2, 1, 1]]]))
    result = meter.compute()
    assert result["pixel_acc"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(meter.matrix(), [[0, 0, 0], [1, 1, 0], [0, 0, 1]])


def test_predicted_class_absent_from_ground_truth_counts_in_miou() -> None:
    meter = SegmentationMeter(3)
    meter.update(torch.tensor([[[0, 2]]]), torch.tensor([[[0, 0]]]))
    result = meter.compute()
    # class 0: TP 1, FN 1 -> 1/2; class 2: FP 1 -> 0; class 1 absent -> left out.
    assert result["miou"] == pytest.approx(0.25)


def test_shards_merge_to_the_single_pass_confusion() -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 5, (6, 8, 9), generator=generator)
    target = torch.randint(0, 5, (6, 8, 9), generator=generator)
    target[target == 4] = 255
    single = SegmentationMeter(5)
    single.update(pred, target)
    shards = [SegmentationMeter(5) for _ in range(3)]
    for k, shard in enumerate(shards):
        shard.update(pred[2 * k:2 * k + 2], target[2 * k:2 * k + 2])
    merged = SegmentationMeter.from_state(shards[0].state_dict())
    merged.merge(shards[1]).merge(SegmentationMeter.from_state(shards[2].state_dict()))
    np.testing.assert_array_equal(merged.matrix(), single.matrix())
    naive = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            naive[t, p] += 1
    np.testing.assert_array_equal(single.matrix(), naive)


def test_bad_segmentation_inputs() -> None:
    meter = SegmentationMeter(3)
    with pytest.raises(ValueError, match="shape mismatch"):
        meter.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        meter.update(torch.full((1, 3, 2, 2), float("nan")), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target: labels span \[0, 7\]"):
        meter.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.tensor([[[0, 7]]]))
    with pytest.raises(TypeError, match="integer labels"):
        meter.update(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no labelled"):
        meter.compute()
    meter.update(torch.zeros(1, 1, 2, dtype=torch.long), torch.full((1, 1, 2), 255))
    with pytest.raises(ValueError, match="no labelled"):
        meter.compute()


@pytest.mark.cuda
def test_confusion_matrix_stays_on_the_gpu() -> None:
    meter = SegmentationMeter(3)
    meter.update(torch.tensor([[[0, 1, 2]]], device="cuda"), torch.tensor([[[0, 1, 1]]], device="cuda"))
    assert meter.confusion.device.type == "cuda"
    assert meter.compute()["pixel_acc"] == pytest.approx(2 / 3)


def test_cityscapes_iiou_by_hand() -> None:
    # Train ids: road 0, person 11, car 13. Instance ids: labelId x 1000 + k (car = 26, person = 24).
    target = torch.tensor([[[13, 13, 13, 13, 0, 0],
                            [11, 11, 0, 0, 13, 255]]])
    instances = torch.tensor([[[26001, 26001, 26001, 26001, 7, 7],
                               [24000, 24000, 7, 7, 26, 0]]])   # 26 = car crowd region
    pred = torch.tensor([[[13, 13, 13, 0, 13, 0],
                          [11, 0, 11, 0, 13, 13]]])
    meter = CityscapesIIoU()
    meter.update(pred, target, instances)
    result = meter.compute()
    # cityscapesScripts evalPixelLevelSemanticLabeling.py args.avgClassSize.
    car, person = 12794.0202738185, 3462.4756337644
    assert AVERAGE_INSTANCE_SIZE["car"] == car and AVERAGE_INSTANCE_SIZE["person"] == person
    # Car instance 26001: 4 px, 3 predicted car: wTP = 3 car/4, wFN = 1 car/4.
    # Car FP: road pixel (0,4) predicted car; the crowd pixel is ground-truth car (not FP);
    # the ignored pixel (255) does not count. FP = 1.
    w_tp, w_fn = 3 * car / 4, 1 * car / 4
    assert result["iiou/car"] == pytest.approx(w_tp / (w_tp + 1 + w_fn))
    # Person instance 24000: 2 px, 1 predicted person; FP: road pixel (1,2) -> 1.
    p_tp, p_fn = person / 2, person / 2
    assert result["iiou/person"] == pytest.approx(p_tp / (p_tp + 1 + p_fn))
    assert math.isnan(result["iiou/bus"])
    assert result["iiou"] == pytest.approx((result["iiou/car"] + result["iiou/person"]) / 2)


def test_cityscapes_iiou_merges_exactly_and_rejects_bad_input() -> None:
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(11, 14, (4, 6, 6), generator=generator)
    instances = 26000 + torch.randint(0, 3, (4, 6, 6), generator=generator)
    pred = torch.randint(11, 14, (4, 6, 6), generator=generator)
    single = CityscapesIIoU()
    single.update(pred, target, instances)
    a, b = CityscapesIIoU(), CityscapesIIoU()
    a.update(pred[:1], target[:1], instances[:1])
    b.update(pred[1:], target[1:], instances[1:])
    merged = CityscapesIIoU.from_state(a.state_dict()).merge(b)
    assert merged.compute() == pytest.approx(single.compute(), rel=1e-12, nan_ok=True)
    with pytest.raises(ValueError, match="shape mismatch"):
        single.update(pred, target, instances[:, :5])


def test_cityscapes_categories_by_hand() -> None:
    # Train ids: road 0, person 11, rider 12, car 13, truck 14 (categories flat, human, vehicle).
    target = torch.tensor([[[13, 13, 13, 13, 0, 0],
                            [11, 11, 0, 0, 13, 255]]])
    instances = torch.tensor([[[26001, 26001, 26001, 26001, 7, 7],
                               [24000, 24000, 7, 7, 26, 0]]])
    pred = torch.tensor([[[13, 13, 13, 14, 13, 0],
                          [11, 12, 11, 0, 13, 13]]])
    meter = CityscapesIIoU()
    meter.update(pred, target, instances)
    result = meter.compute()
    # flat: GT road 4 px, 2 predicted flat -> TP 2, FN 2; no other class predicted road -> 2/4.
    assert result["category_iou/flat"] == pytest.approx(2 / 4)
    # human: person 2 px, both predicted person or rider -> TP 2; road (1, 2) predicted person -> FP 1.
    assert result["category_iou/human"] == pytest.approx(2 / 3)
    # vehicle: car 5 px all predicted car or truck -> TP 5; road (0, 4) predicted car -> FP 1.
    assert result["category_iou/vehicle"] == pytest.approx(5 / 6)
    for name in ("construction", "object", "nature", "sky"):
        assert math.isnan(result[f"category_iou/{name}"])
    assert result["category_iou"] == pytest.approx((2 / 4 + 2 / 3 + 5 / 6) / 3)
    # Category iIoU weights TP/FN of each instance by its class's average size over its size:
    # the car instance (4 px) and the person instance (2 px) are entirely in their category.
    car, person = AVERAGE_INSTANCE_SIZE["car"], AVERAGE_INSTANCE_SIZE["person"]
    assert result["category_iiou/vehicle"] == pytest.approx((4 * car / 4) / (car + 1))
    assert result["category_iiou/human"] == pytest.approx((2 * person / 2) / (person + 1))
    # The class iIoU of car is lower: one of its pixels was predicted truck.
    assert result["iiou/car"] == pytest.approx((3 * car / 4) / (3 * car / 4 + 1 + car / 4))
