"""The library evaluation: padding and cropping at odd sizes against hand-built references,
each task's metrics dict against hand-computed values, computation and the ponder ratio."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pag_model import Evaluator, MeterSettings, PAGNet, evaluate, pad_to_multiple, predict_full_size
from pag_model.metrics.boundary_nms import HED_NMS
from pag_model.metrics.cityscapes import AVERAGE_INSTANCE_SIZE

ALL = ("boundary", "semantic", "depth", "normals")


class FixedNet(nn.Module):
    """Returns given outputs (B, C, H, W) at the original size, padded with junk to the input's size.

    A 1x1 conv 3 -> 1 runs on the input, so multiply-adds are 3 per input pixel.
    """

    def __init__(self, outputs, tasks, stride=8):
        super().__init__()
        self.fixed, self.tasks, self.output_stride = outputs, tuple(tasks), stride
        self.probe = nn.Conv2d(3, 1, 1)
        self.seen = []

    def forward(self, images):
        self.seen.append(tuple(images.shape[-2:]))
        self.probe(images)
        h, w = images.shape[-2:]
        return {k: F.pad(v, (0, w - v.shape[-1], 0, h - v.shape[-2]), value=1e3) if torch.is_tensor(v)
                else v for k, v in self.fixed.items()}


def image(h, w, b=1):
    return torch.randn(b, 3, h, w)


# ---------------------------------------------------------------- padding and cropping

def test_pad_to_multiple_pads_bottom_and_right_only():
    x = torch.arange(2 * 3 * 5 * 9, dtype=torch.float32).reshape(2, 3, 5, 9)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 8, 16)
    assert torch.equal(padded[..., :5, :9], x) and not padded[..., 5:, :].any() and not padded[..., 9:].any()
    rep = pad_to_multiple(x, 8, "replicate")
    assert torch.equal(rep[..., 7, :9], x[..., 4, :]) and torch.equal(rep[..., :5, 15], x[..., 8])
    assert pad_to_multiple(x[..., :8, :8].contiguous(), 8) is not None
    same = torch.zeros(1, 3, 16, 24)
    assert pad_to_multiple(same, 8) is same
    with pytest.raises(ValueError, match="padding 'reflect'"):
        pad_to_multiple(x, 8, "reflect")


@pytest.mark.parametrize("h,w", [(321, 481), (481, 321)])
def test_full_size_prediction_equals_the_model_on_a_hand_padded_image(h, w):
    torch.manual_seed(1)
    net = PAGNet("resnet_tiny", tasks=ALL, num_classes=4, gated=("res4", "res5"), head_channels=8).eval()
    x = image(h, w)
    # Reference: the image placed in the top-left of an all-zero canvas whose sides are multiples of 8.
    canvas = torch.zeros(1, 3, (h + 7) // 8 * 8, (w + 7) // 8 * 8)
    canvas[..., :h, :w] = x
    assert canvas.shape[-2:] == ((328, 488) if h == 321 else (488, 328))
    with torch.no_grad():
        reference = net(canvas)
    out = predict_full_size(net, x)
    for key in ALL:
        assert out[key].shape[-2:] == (h, w)
        torch.testing.assert_close(out[key], reference[key][..., :h, :w])
    assert all(s.shape[-2:] == (h, w) for s in out["boundary_sides"])
    with pytest.raises(ValueError, match=f"input size {h}x{w} is not divisible"):
        net(x)


def test_sizes_already_a_multiple_of_the_stride_run_unchanged():
    net = PAGNet("resnet_tiny", tasks=("semantic",), num_classes=3).eval()
    x = image(40, 56)
    with torch.no_grad():
        torch.testing.assert_close(predict_full_size(net, x)["semantic"], net(x)["semantic"], rtol=0, atol=0)


# ---------------------------------------------------------------- metrics by hand, per task

def test_semantic_metrics_by_hand_on_an_odd_size():
    # 2 x 3 labels (255 ignored) and predictions; K = 3.
    label = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    net = FixedNet({"semantic": F.one_hot(pred, 3).permute(0, 3, 1, 2).float()}, ["semantic"])
    metrics = evaluate(net, [{"image": image(2, 3), "semantic": label}], MeterSettings(num_classes=3))
    assert net.seen == [(8, 8)]
    # Valid pixels 5, correct 4. IoU: class 0 1/(1+1) ; class 1 2/(2+1) ; class 2 1/1.
    assert metrics["semantic/pixel_acc"] == pytest.approx(4 / 5)
    assert metrics["semantic/miou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["semantic/mean_acc"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    # Computation: the probe conv, 3 multiply-adds per pixel of the padded 8 x 8 input.
    assert metrics["macs"] == 3 * 64 and metrics["flops"] == 2 * 3 * 64 and metrics["macs_ratio"] == 1.0
    assert metrics["images"] == 1.0
    assert not any(k.startswith(("semantic/iiou", "semantic/category", "ponder/")) for k in metrics)


def test_cityscapes_iiou_and_categories_by_hand():
    # Train ids: road 0, person 11, rider 12, car 13, truck 14. Instance ids labelId x 1000 + k.
    target = torch.tensor([[[13, 13, 13, 13, 0, 0], [11, 11, 0, 0, 13, 255]]])
    instances = torch.tensor([[[26001, 26001, 26001, 26001, 7, 7], [24000, 24000, 7, 7, 26, 0]]])
    pred = torch.tensor([[[13, 13, 13, 14, 13, 0], [11, 12, 11, 0, 13, 13]]])
    net = FixedNet({"semantic": F.one_hot(pred, 19).permute(0, 3, 1, 2).float()}, ["semantic"])
    batch = {"image": image(2, 6), "semantic": target, "instances": instances}
    m = evaluate(net, [batch], MeterSettings(num_classes=19))
    car, person = AVERAGE_INSTANCE_SIZE["car"], AVERAGE_INSTANCE_SIZE["person"]
    # Classes. Car instance: 4 px, 3 predicted car; car FP: the road pixel (0, 4) -> 1.
    iiou_car = (3 * car / 4) / (3 * car / 4 + 1 + car / 4)
    # Person instance: 2 px, 1 predicted person; person FP: road pixel (1, 2) -> 1.
    iiou_person = (person / 2) / (person / 2 + 1 + person / 2)
    # Truck and rider have no instance but one false positive each: iIoU 0.
    assert m["semantic/iiou"] == pytest.approx((iiou_car + iiou_person + 0 + 0) / 4)
    # Categories (confusion over the 11 labelled pixels): flat: TP 2, FN 2, FP 0 -> 1/2;
    # human: TP 2, FN 0, FP 1 (road -> person) -> 2/3; vehicle: TP 5, FN 0, FP 1 -> 5/6.
    assert m["semantic/category_iou"] == pytest.approx((1 / 2 + 2 / 3 + 5 / 6) / 3)
    # Category iIoU: the car instance is all vehicle (wTP = car), the person instance all
    # human (wTP = person); FP as for category IoU.
    assert m["semantic/category_iiou"] == pytest.approx((person / (person + 1) + car / (car + 1)) / 2)
    assert m["semantic/miou"] > 0
    mixed = Evaluator(net, MeterSettings(num_classes=19))
    mixed.update(batch)
    with pytest.raises(ValueError, match="some batches carry 'instances' and others do not"):
        mixed.update({"image": image(2, 6), "semantic": target})
    with pytest.raises(ValueError, match="need the 19 Cityscapes train ids"):
        evaluate(FixedNet({"semantic": torch.zeros(1, 5, 2, 6)}, ["semantic"]), [batch], MeterSettings(num_classes=5))


def test_depth_metrics_by_hand():
    p = [1.0, 2.0, 4.0, 8.0]
    g = [1.0, 2.4, 2.0, 12.0]
    log_pred = torch.tensor([[[[math.log(v) for v in p] + [0.0]]]])  # (1, 1, 1, 5); the last is invalid
    batch = {"image": image(1, 5), "depth": torch.tensor([[g + [0.0]]]),
             "depth_valid": torch.tensor([[[True] * 4 + [False]]])}
    m = evaluate(FixedNet({"depth": log_pred}, ["depth"]), [batch], MeterSettings())
    # max(g/p, p/g) = 1, 1.2, 2, 1.5: below 1.25 -> 2, below 1.5625 -> 3, below 1.953 -> 3.
    assert (m["depth/delta1"], m["depth/delta2"], m["depth/delta3"]) == pytest.approx((0.5, 0.75, 0.75))
    assert m["depth/absrel"] == pytest.approx((0 + 0.4 / 2.4 + 2 / 2 + 4 / 12) / 4, rel=1e-5)
    assert m["depth/sqrel"] == pytest.approx((0 + 0.16 / 2.4 + 4 / 2 + 16 / 12) / 4, rel=1e-5)
    assert m["depth/rmse"] == pytest.approx(math.sqrt((0.16 + 4 + 16) / 4), rel=1e-5)
    logs = [math.log(1.2), math.log(0.5), math.log(1.5)]
    assert m["depth/rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4), rel=1e-5)
    assert m["depth/log10"] == pytest.approx(sum(abs(v) for v in logs) / math.log(10) / 4, rel=1e-5)


def test_normals_metrics_by_hand():
    angles = [0.0, 10.0, 20.0, 40.0]
    # Predictions at these angles from +z in the x-z plane, of length 2 (the transform normalises).
    pred = torch.tensor([[2 * math.sin(math.radians(a)) for a in angles], [0.0] * 4,
                         [2 * math.cos(math.radians(a)) for a in angles]])[None, :, None, :]
    gt = torch.tensor([[0.0] * 4, [0.0] * 4, [1.0] * 4])[None, :, None, :]
    batch = {"image": image(1, 4), "normals": gt, "normals_valid": torch.ones(1, 1, 4, dtype=torch.bool)}
    m = evaluate(FixedNet({"normals": pred}, ["normals"]), [batch], MeterSettings())
    assert m["normals/mean"] == pytest.approx(17.5, abs=1e-3)
    assert m["normals/median"] == pytest.approx(15.0, abs=0.01)
    assert m["normals/rmse"] == pytest.approx(math.sqrt((100 + 400 + 1600) / 4), abs=1e-3)
    assert (m["normals/within_11_25"], m["normals/within_22_5"], m["normals/within_30"]) == (0.5, 0.75, 0.75)


def test_boundary_metrics_by_hand_against_all_annotators():
    # 97 x 101 (padded to 104 x 104). Annotator A: row 40, cols 20..80 (61 px); annotator B:
    # the same line and row 70, cols 20..80. The prediction is A's line at 0.8.
    h, w = 97, 101
    a = torch.zeros(h, w, dtype=torch.uint8)
    a[40, 20:81] = 1
    b = a.clone()
    b[70, 20:81] = 1
    prob = torch.zeros(1, 1, h, w)
    prob[0, 0, 40, 20:81] = 0.8
    logits = torch.logit(prob.clamp(1e-6, 1 - 1e-6))
    net = FixedNet({"boundary": logits, "boundary_sides": []}, ["boundary"])
    batch = {"image": image(h, w), "boundary": a[None].long(), "boundary_annotators": torch.stack([a, b])[None]}
    # HED's NMS smooths the map first, which shortens a 1-px line's ends at high thresholds;
    # the hand count below is for the unsmoothed map (the smoothing has its own tests).
    unsmoothed = dataclasses.replace(HED_NMS, name="unsmoothed", smooth_radius=0)
    m = evaluate(net, [batch], MeterSettings(workers=1, nms_reference=unsmoothed))
    # Where the line is kept: recall (61 + 61) / (61 + 122) = 2/3, precision 1: F = 0.8.
    assert m["boundary/ods"] == pytest.approx(0.8, abs=1e-6)
    assert m["boundary/ois"] == pytest.approx(0.8, abs=1e-6)
    assert 0 <= m["boundary/ap"] <= 1 and 0 < m["boundary/ods_threshold"] < 1
    with pytest.raises(KeyError, match="needs batch field 'boundary_annotators'"):
        evaluate(net, [{"image": image(h, w), "boundary": a[None].long()}], MeterSettings(workers=1))


# ---------------------------------------------------------------- ponder ratio

def test_ponder_ratio_by_hand_on_an_odd_size():
    # 30 x 61 is padded to 32 x 64, so the gates' masks are 4 x 8. res4's gate computes the
    # left half (x < 32), res5's everywhere: ponder 2 for x < 32, 1 beyond.
    net = PAGNet("resnet_tiny", tasks=("semantic",), num_classes=2, multipool=None, gated=("res4", "res5"))
    left = torch.zeros(4, 8)
    left[:, :4] = 1
    net.set_gate_mode("fixed", blocks=["res4"], fixed_mask=left)
    net.set_gate_mode("open", blocks=["res5"])
    labels = torch.zeros(1, 30, 61, dtype=torch.long)
    labels[..., 24:] = 1  # a change between x = 23 and 24: near (radius 8) is x in 16..31
    evaluator = Evaluator(net, MeterSettings(num_classes=2))
    step = evaluator.update({"image": image(30, 61), "semantic": labels})
    assert step.ponder.shape == (1, 30, 61)
    assert (step.ponder[..., :32] == 2).all() and (step.ponder[..., 32:] == 1).all()
    m = evaluator.compute()
    # near: 16 columns of 2; far: 16 columns of 2 (x < 16) and 29 of 1 (x = 32..60).
    assert m["ponder/near_boundary"] == pytest.approx(2.0)
    assert m["ponder/interior"] == pytest.approx((16 * 2 + 29) / 45)
    assert m["ponder/boundary_ratio"] == pytest.approx(2.0 / ((16 * 2 + 29) / 45))
    assert 0 < m["macs_ratio"] < 1 and m["macs"] < m["dense_macs"]


@pytest.mark.slow
def test_bsds_sizes_and_a_panorama_through_a_gated_network():
    """Every task's metrics come out for BSDS 321x481 and 481x321 images and a 2D-3D-S-like
    panorama whose height is not a multiple of 8."""
    torch.manual_seed(0)
    net = PAGNet("resnet_tiny", tasks=("boundary",), gated=("res4", "res5"), multipool="res4", head_channels=8)
    batches = []
    for h, w in ((321, 481), (481, 321)):
        ann = torch.zeros(1, 3, h, w, dtype=torch.uint8)
        ann[:, :, h // 2, 10:-10] = 1
        batches.append({"image": image(h, w), "boundary": ann[:, 0].long(), "boundary_annotators": ann})
    m = evaluate(net, batches, MeterSettings(workers=1))
    assert {"boundary/ods", "boundary/ois", "boundary/ap", "macs_ratio", "ponder/boundary_ratio"} <= set(m)
    assert m["images"] == 2.0
    pano = PAGNet("resnet_tiny", tasks=("semantic", "depth", "normals"), num_classes=13, gated=("res5",))
    h, w = 36, 90
    semantic = torch.zeros(1, h, w, dtype=torch.long)
    semantic[..., 45:] = 12
    batch = {"image": image(h, w), "semantic": semantic,
             "depth": torch.rand(1, h, w) + 0.5, "depth_valid": torch.ones(1, h, w, dtype=torch.bool),
             "normals": F.normalize(torch.randn(1, 3, h, w), dim=1),
             "normals_valid": torch.ones(1, h, w, dtype=torch.bool)}
    m = evaluate(pano, [batch], MeterSettings(num_classes=13))
    assert {"semantic/miou", "depth/delta1", "normals/within_30", "ponder/boundary_ratio"} <= set(m)
    assert all(isinstance(v, float) for v in m.values())


def test_bad_batches_name_the_problem():
    net = FixedNet({"depth": torch.zeros(1, 1, 4, 4)}, ["depth"])
    evaluator = Evaluator(net, MeterSettings())
    with pytest.raises(KeyError, match="'depth' needs batch field 'depth_valid'"):
        evaluator.update({"image": image(4, 4), "depth": torch.ones(1, 4, 4)})
    with pytest.raises(ValueError, match=r"batch\['depth'\] has spatial size \(4, 5\), the image \(4, 4\)"):
        evaluator.update({"image": image(4, 4), "depth": torch.ones(1, 4, 5),
                          "depth_valid": torch.ones(1, 4, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match="not among the network's tasks"):
        Evaluator(net, MeterSettings(), tasks=["semantic"])
    with pytest.raises(ValueError, match="saw no images"):
        evaluator.compute()


def test_shards_merge_to_the_whole_and_meters_round_trip_their_state():
    torch.manual_seed(3)
    h, w = 5, 7
    batches = []
    for _ in range(3):
        batches.append({"image": image(h, w), "semantic": torch.randint(0, 3, (1, h, w)),
                        "depth": torch.rand(1, h, w) + 0.5, "depth_valid": torch.rand(1, h, w) > 0.3,
                        "normals": F.normalize(torch.randn(1, 3, h, w), dim=1),
                        "normals_valid": torch.rand(1, h, w) > 0.3})
    outputs = {"semantic": torch.randn(1, 3, h, w), "depth": torch.randn(1, 1, h, w),
               "normals": torch.randn(1, 3, h, w)}
    net = FixedNet(outputs, ["semantic", "depth", "normals"])
    settings = MeterSettings(num_classes=3)
    whole = Evaluator(net, settings)
    a, b = Evaluator(net, settings), Evaluator(net, settings)
    for i, batch in enumerate(batches):
        whole.update(batch)
        (a if i == 0 else b).update(batch)
    assert a.merge(b).compute() == pytest.approx(whole.compute(), rel=1e-9)
    for task, meter in whole.meters.items():
        fresh = Evaluator(net, settings).meters[task]
        fresh.load_state_dict(meter.state_dict())
        assert fresh.compute() == pytest.approx(meter.compute(), rel=1e-12)


def test_the_boundary_nms_reference_reaches_the_meter():
    from pag_model.metrics.boundary_nms import HED_NMS, RCF_NMS
    from pag_model.task_meters import MeterSettings
    from pag_model.tasks import TASKS

    assert TASKS["boundary"].meter(MeterSettings()).meter.nms_reference == HED_NMS
    assert TASKS["boundary"].meter(MeterSettings(nms_reference=RCF_NMS)).meter.nms_reference == RCF_NMS
