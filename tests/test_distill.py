import torch
import torch.nn.functional as F

from ds.distill import distillation_loss, soft_cross_entropy


def test_soft_cross_entropy_is_cross_entropy_to_the_teacher_distribution():
    torch.manual_seed(0)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    expected = -(F.softmax(t, -1) * F.log_softmax(s, -1)).sum(-1).mean()
    assert torch.allclose(soft_cross_entropy(s, t), expected)
    # against itself it is the teacher's entropy, its minimum over students
    entropy = -(F.softmax(t, -1) * F.log_softmax(t, -1)).sum(-1).mean()
    assert torch.allclose(soft_cross_entropy(t, t), entropy)
    assert soft_cross_entropy(s, t) > entropy


def test_distillation_loss_mixes_0_7_soft_and_0_3_hard():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = distillation_loss(s, t, y)
    expected = 0.7 * soft_cross_entropy(s, t) + 0.3 * F.cross_entropy(s, y)
    assert torch.allclose(loss, expected)
    assert torch.allclose(distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    # temperature: T**2-scaled soft CE of the softened distributions
    t4 = distillation_loss(s, t, y, alpha=1.0, temperature=4.0)
    assert torch.allclose(t4, 16 * -(F.softmax(t / 4, -1) * F.log_softmax(s / 4, -1)).sum(-1).mean())


def test_distillation_loss_gradient_only_reaches_the_student():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    distillation_loss(s, t.detach(), torch.zeros(4, dtype=torch.long)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
