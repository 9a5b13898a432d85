"""PAGNet: output stride 8, any size divisible by 8, four tasks, frozen BN, weights, errors."""
import pytest
import torch
from safetensors.torch import save_file

from pag_model import DEFAULT_DILATIONS, MultiPool, PAGNet, build_backbone, sparsity_loss, task_loss

TASKS = ("boundary", "semantic", "depth", "normals")


def batch_for(b, h, w, k=5):
    return {
        "semantic": torch.randint(0, k, (b, h, w)),
        "depth": torch.rand(b, h, w) + 0.5,
        "depth_valid": torch.rand(b, h, w) > 0.2,
        "normals": torch.nn.functional.normalize(torch.randn(b, 3, h, w), dim=1),
        "normals_valid": torch.rand(b, h, w) > 0.2,
        "boundary": torch.randint(0, 2, (b, h, w)),
    }


@pytest.mark.parametrize("h,w", [(64, 64), (40, 56), (24, 88)])
def test_outputs_at_input_resolution_for_any_size_divisible_by_8(h, w):
    net = PAGNet("resnet_tiny", tasks=TASKS, num_classes=5, gated=("res4", "res5")).eval()
    feats = net.features(torch.randn(1, 3, h, w))
    assert feats["res5"].shape[-2:] == (h // 8, w // 8)  # output stride 8
    out = net(torch.randn(2, 3, h, w))
    assert out["semantic"].shape == (2, 5, h, w)
    assert out["depth"].shape == (2, 1, h, w)
    assert out["normals"].shape == (2, 3, h, w)
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(2, h, w))
    assert out["boundary"].shape == (2, 1, h, w) and len(out["boundary_sides"]) == 5


def test_input_not_divisible_by_8_is_rejected_clearly():
    net = PAGNet("resnet_tiny", num_classes=3)
    with pytest.raises(ValueError, match="input size 60x64 is not divisible by the output stride 8"):
        net(torch.randn(1, 3, 60, 64))


def test_all_four_tasks_train_forward_backward_reaching_gates_and_multipool():
    net = PAGNet("resnet_tiny", tasks=TASKS, num_classes=5, gated=("res3", "res4", "res5")).train()
    net.set_tau(0.5)
    out = net(torch.randn(1, 3, 32, 48))  # batch size 1 works (frozen BN)
    loss, parts = task_loss(out, batch_for(1, 32, 48), TASKS)
    sparse, dens = sparsity_loss(net, 0.5, 0.1)
    (loss + sparse).backward()
    assert set(parts) == set(TASKS) and all(torch.isfinite(v) for v in parts.values())
    assert all(g.conv.weight.grad is not None for _, g in net.gates())
    assert net.multipools()[0].selector.weight.grad.abs().sum() > 0
    assert len(dens) == 3


def test_frozen_batchnorm_keeps_statistics_in_training():
    net = PAGNet("resnet_tiny", num_classes=3).train()
    bn = net.backbone.layer1[0].bn1
    before = bn.running_mean.clone(), bn.running_var.clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        loss, _ = task_loss(net(torch.randn(1, 3, 32, 32) * 3 + 1), batch_for(1, 32, 32, 3), ["semantic"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_weights_load_from_a_local_file(tmp_path, suffix):
    source = build_backbone("resnet_tiny")
    for p in source.parameters():
        p.data.normal_()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.randn(10, 512)  # a classifier, as in ImageNet checkpoints: ignored
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    net = PAGNet("resnet_tiny", num_classes=3, pretrained=str(path), gated=("res5",))
    torch.testing.assert_close(net.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.testing.assert_close(net.backbone.conv1.weight, source.conv1.weight)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        PAGNet("resnet_tiny", pretrained=str(tmp_path / "nothere.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"layer9.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth: weights do not fit"):
        PAGNet("resnet_tiny", pretrained=str(bad))


def test_later_stage_loads_earlier_stage_weights_adding_only_gates_and_multipool():
    base = PAGNet("resnet_tiny", num_classes=3, multipool=None, gated=())
    staged = PAGNet("resnet_tiny", num_classes=3, multipool="res5", gated=("res4", "res5"))
    new = staged.load_stage_state(base.state_dict())
    assert new and all(".gate." in k or k.startswith("after.res5.") for k in new)
    torch.testing.assert_close(staged.heads["semantic"].predict.weight, base.heads["semantic"].predict.weight)
    other = PAGNet("resnet_tiny", num_classes=7)
    with pytest.raises(ValueError, match="checkpoint does not fit"):
        staged.load_stage_state(other.state_dict())


def test_multipool_placement_and_variant():
    for place in ("res3", "res4", "res5", "res6"):
        net = PAGNet("resnet_tiny", num_classes=3, multipool=place, multipool_variant="wavg")
        assert len(net.multipools()) == 1 and net.multipools()[0].variant == "wavg"
        assert net.multipools()[0].dilations == list(DEFAULT_DILATIONS)
        net.eval()(torch.randn(1, 3, 32, 32))
    assert not PAGNet("resnet_tiny", num_classes=3, multipool=None).multipools()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tasks": ("semantic", "edges")}, "unknown task 'edges'; allowed: boundary, semantic, depth, normals"),
        ({"backbone": "vgg16"}, "unknown backbone 'vgg16'; allowed: resnet50"),
        ({"multipool": "res9"}, "unknown MultiPool place 'res9'"),
        ({"gated": ("res1",)}, "unknown gated block 'res1'; allowed: res2, res3, res4, res5"),
        ({"dilations": ()}, "dilations must be a non-empty list"),
        ({"tasks": ()}, "tasks must name at least one"),
    ],
)
def test_bad_configuration_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PAGNet(**{"backbone": "resnet_tiny", **kwargs})


def test_multipool_is_a_multipool():
    assert isinstance(PAGNet("resnet_tiny").after["res5"], MultiPool)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_backbone_loads_imagenet_weights_from_a_local_file_through_timm(tmp_path, suffix):
    """A published timm checkpoint layout (with its 1000-class fc) on disk, no network."""
    import timm

    source = timm.create_model("resnet26", pretrained=False)  # the layout timm publishes
    for p in source.parameters():
        p.data.normal_()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"resnet26{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    backbone = build_backbone("resnet26", pretrained=str(path))
    torch.testing.assert_close(backbone.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    torch.testing.assert_close(backbone.conv1.weight, source.conv1.weight)
    assert backbone.layer4[1].conv2.dilation == (4, 4)  # output stride 8 kept (timm dilates Res5 by 4)
    bad = tmp_path / f"bad{suffix}"
    bad_state = {"layer9.weight": torch.zeros(1)}
    save_file(bad_state, str(bad)) if suffix == ".safetensors" else torch.save(bad_state, bad)
    with pytest.raises(ValueError, match=f"bad{suffix}: weights do not fit"):
        build_backbone("resnet26", pretrained=str(bad))
