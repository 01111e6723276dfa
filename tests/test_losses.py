"""Objectives: hand-computed values, gradient direction, invariances, padding, degenerate lists."""

import math

import pytest
import torch
import torch.nn.functional as F

from rankwise.train.losses import OBJECTIVES, LambdaLoss, LiPOLambdaLoss, ListMLELoss, ListNetLoss, PointwiseBCELoss, RankListLoss, RankNetLoss, make_objective, policy_scores, sequence_log_probs

PER_CANDIDATE = ("pointwise", "distill-mse")  # defined on each candidate: degenerate lists still count
RANKING = [n for n in OBJECTIVES if n not in PER_CANDIDATE]
ALL = list(OBJECTIVES)
RELEVANCE = [n for n in OBJECTIVES if n != "distill-mse"]  # distill-mse regresses onto teacher scores, not relevance


def _batch(seed: int = 0, b: int = 3, length: int = 6):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, length, generator=g)
    labels = torch.randint(0, 3, (b, length), generator=g).float()
    labels[:, 0] = 2.0
    labels[:, 1] = 0.0
    return scores, labels


@pytest.mark.parametrize("name", ALL)
def test_loss_is_permutation_invariant(name):
    scores, labels = _batch()
    perm = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(1))
    loss = make_objective(name)
    assert loss(scores, labels).item() == pytest.approx(loss(scores[:, perm], labels[:, perm]).item(), rel=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_loss_ignores_padding_whatever_its_values(name):
    scores, labels = _batch()
    pad_s = torch.tensor([[1e4, float("nan")]] * 3)
    pad_y = torch.tensor([[5.0, 7.0]] * 3)
    padded_s = torch.cat([scores, pad_s], dim=1).requires_grad_(True)
    mask = torch.cat([torch.ones_like(scores, dtype=torch.bool), torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    loss = make_objective(name)
    value = loss(padded_s, torch.cat([labels, pad_y], dim=1), mask)
    assert value.item() == pytest.approx(loss(scores, labels).item(), rel=1e-5)
    value.backward()
    assert torch.isfinite(padded_s.grad).all()
    assert (padded_s.grad[:, -2:] == 0).all()


@pytest.mark.parametrize("name", RANKING)
def test_degenerate_lists_give_zero_without_nan(name):
    loss = make_objective(name)
    single = torch.tensor([[3.0, 0.0, 0.0]], requires_grad=True)
    one = loss(single, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[True, False, False]]))
    same = loss(single, torch.tensor([[1.0, 1.0, 1.0]]))
    assert one.item() == 0.0 and same.item() == 0.0
    (one + same).backward()
    assert torch.isfinite(single.grad).all() and (single.grad == 0).all()


def test_pointwise_degenerate_lists_are_finite():
    loss = PointwiseBCELoss()
    value = loss(torch.tensor([[3.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[True, False]]))
    assert value.item() == pytest.approx(F.softplus(torch.tensor(-3.0)).item())


@pytest.mark.parametrize("name", ALL)
def test_better_ordered_list_has_lower_loss(name):
    labels = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    good = torch.tensor([[3.0, 1.0, -1.0, -2.0]])
    bad = good.flip(1)
    loss = make_objective(name)
    assert loss(good, labels).item() < loss(bad, labels).item()


@pytest.mark.parametrize("name", RELEVANCE)
def test_gradient_raises_relevant_and_lowers_irrelevant(name):
    scores = torch.zeros(1, 4, requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    make_objective(name)(scores, labels).backward()
    assert scores.grad[0, 0] < 0  # gradient descent raises the relevant score
    assert scores.grad[0, 1:].sum() > 0  # and lowers the irrelevant ones overall
    assert (scores.grad[0, 1:] > 0).all()  # every irrelevant one (ListMLE: tied negatives are not ranked among themselves)


@pytest.mark.parametrize("name", ALL)
def test_per_list_weights_scale_each_list(name):
    scores, labels = _batch()
    loss = make_objective(name)
    per = torch.stack([loss(scores[i : i + 1], labels[i : i + 1]) for i in range(3)])
    w = torch.tensor([0.0, 0.5, 1.0])
    assert loss(scores, labels, weights=w).item() == pytest.approx((per * w).mean().item(), rel=1e-5)


def test_listmle_ties_do_not_train_negatives_order_and_are_order_free():
    # regression: ties used to be ordered by the current score, so with one positive and tied
    # negatives most terms ranked the negatives among themselves (the top negative was pushed up)
    scores = torch.tensor([[0.0, 3.0, 1.0, -1.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    loss = ListMLELoss()(scores, labels)
    expected = torch.logsumexp(scores.detach()[0], 0) - scores.detach()[0, 0]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert (scores.grad[0, 1:] > 0).all() and scores.grad[0, 0] < 0


def test_pointwise_bce_hand_value():
    value = PointwiseBCELoss()(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]]))
    assert value.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6)


def test_score_distillation_mse_hand_value_with_padding_and_list_weights():
    scores = torch.tensor([[1.0, 2.0, 9.0], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0, -9.0], [1.0, -1.0, 3.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss = make_objective("distill-mse")
    assert loss(scores, teacher, mask).item() == pytest.approx(((1 + 0) / 2 + (1 + 1 + 9) / 3) / 2)
    weighted = loss(scores, teacher, mask, weights=torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(2 * 0.5 / 2)
    weighted.backward()  # the padded candidate and the zero-weight list get no gradient
    assert scores.grad[0, 2] == 0 and (scores.grad[1] == 0).all() and scores.grad[0, 0] > 0


def test_ranknet_hand_value():
    # pairs with y_i > y_j: (0,1), (0,2), (1,2) -> mean softplus(-(s_i - s_j))
    s = torch.tensor([[1.0, 2.0, 0.0]])
    y = torch.tensor([[2.0, 1.0, 0.0]])
    expected = (math.log1p(math.exp(1.0)) + math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 3
    assert RankNetLoss()(s, y).item() == pytest.approx(expected, rel=1e-6)


def test_listnet_hand_value():
    s = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0]])
    p = torch.softmax(y, 1)
    expected = -(p * torch.log_softmax(s, 1)).sum().item()
    assert ListNetLoss()(s, y).item() == pytest.approx(expected, rel=1e-6)


def test_listmle_hand_value():
    # order by label: 0, 1, 2 -> [lse(s0,s1,s2) - s0] + [lse(s1,s2) - s1] + 0
    s = torch.tensor([[0.5, 1.0, -1.0]])
    y = torch.tensor([[2.0, 1.0, 0.0]])
    expected = math.log(math.exp(0.5) + math.exp(1) + math.exp(-1)) - 0.5 + math.log(math.exp(1) + math.exp(-1)) - 1
    assert ListMLELoss()(s, y).item() == pytest.approx(expected, rel=1e-6)


def test_lipo_lambda_hand_value():
    # scores rank: idx1 (tau 1), idx0 (tau 2), idx2 (tau 3); psi = y / 2; G = 2^psi
    s = torch.tensor([[1.0, 2.0, 0.0]])
    y = torch.tensor([[2.0, 1.0, 0.0]])
    g = [2.0, 2**0.5, 1.0]
    inv_d = {0: 1 / math.log2(3), 1: 1.0, 2: 1 / math.log2(4)}
    sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731
    s_ = [1.0, 2.0, 0.0]
    expected = sum(
        abs(g[i] - g[j]) * abs(inv_d[i] - inv_d[j]) * sp(s_[i] - s_[j]) for i, j in [(0, 1), (0, 2), (1, 2)]
    )
    assert LiPOLambdaLoss()(s, y).item() == pytest.approx(expected, rel=1e-6)


def test_lipo_with_two_candidates_and_unit_weights_is_dpo():
    pol = torch.tensor([[-4.0, -6.0], [-3.0, -2.5]])
    ref = torch.tensor([[-5.0, -5.0], [-3.2, -2.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    beta = 0.1
    dpo = []
    for b in range(2):
        w, lo = (0, 1) if labels[b, 0] > labels[b, 1] else (1, 0)
        dpo.append(-F.logsigmoid(beta * ((pol[b, w] - ref[b, w]) - (pol[b, lo] - ref[b, lo]))))
    loss = LiPOLambdaLoss(weighting="none").policy_loss(pol, ref, labels, beta=beta)
    assert loss.item() == pytest.approx(torch.stack(dpo).mean().item(), rel=1e-6)
    assert LiPOLambdaLoss(weighting="none")(pol, labels).item() == pytest.approx(RankNetLoss()(pol, labels).item())


def test_lipo_policy_scores_detach_reference():
    pol = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.5]], requires_grad=True)
    LiPOLambdaLoss().policy_loss(pol, ref, torch.tensor([[1.0, 0.0]])).backward()
    assert ref.grad is None and pol.grad[0, 0] < 0
    assert torch.allclose(policy_scores(pol, ref, 2.0), torch.tensor([[1.0, -1.0]]))


def test_sequence_log_probs_sums_only_masked_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    lp = sequence_log_probs(logits, torch.tensor([[0, 1, 1]]), torch.tensor([[False, True, True]]))
    assert lp.item() == pytest.approx(math.log(0.1) + math.log(0.8), rel=1e-5)


def test_lambdaloss_ndcg2pp_hand_value():
    # 2 candidates, y = (1, 0), scores rank idx1 first: ranks (2, 1); maxDCG = 1; G = (1, 0)
    s = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0]])
    delta = abs(1 / math.log2(2) - 1 / math.log2(3))  # |r_i - r_j| = 1
    lambdarank = abs(1 / math.log2(3) - 1 / math.log2(2))
    w = 10 * delta + lambdarank
    assert LambdaLoss()(s, y).item() == pytest.approx(w * math.log1p(math.e), rel=1e-6)


def test_ranklist_exact_and_lse_hand_values():
    s = torch.tensor([[0.3, -0.2, 0.1]])
    y = torch.tensor([[2.0, 1.0, 0.0]])
    e = math.exp
    exact = math.log1p(e(-0.5)) + math.log1p(e(-0.2)) + math.log1p(e(0.3))
    lse = math.log(1 + e(-0.5) + e(-0.2)) + math.log1p(e(0.3))
    assert RankListLoss(form="exact")(s, y).item() == pytest.approx(exact, rel=1e-6)
    assert RankListLoss(form="lse")(s, y).item() == pytest.approx(lse, rel=1e-6)


def test_ranklist_lse_bounds_exact_and_agrees_in_direction():
    scores, labels = _batch(3, b=4, length=8)
    s1 = scores.clone().requires_grad_(True)
    s2 = scores.clone().requires_grad_(True)
    exact, lse = RankListLoss(form="exact")(s1, labels), RankListLoss(form="lse")(s2, labels)
    assert lse.item() <= exact.item() + 1e-6
    exact.backward()
    lse.backward()
    cos = F.cosine_similarity(s1.grad.flatten(), s2.grad.flatten(), dim=0)
    assert cos > 0.8
    # a small step along either form's descent direction lowers the other form
    exact_fn, lse_fn = RankListLoss(form="exact"), RankListLoss(form="lse")
    assert exact_fn(scores - 0.1 * s2.grad, labels) < exact.detach()
    assert lse_fn(scores - 0.1 * s1.grad, labels) < lse.detach()


def test_ranklist_skip_schedule_widens_to_all_pairs():
    loss = RankListLoss(form="exact", widen_until=0.5)
    assert [loss.max_skip(p, 6) for p in (0.0, 0.25, 0.5, 1.0)] == [1, 3, 5, 5]
    s = torch.zeros(1, 4)
    y = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    # progress 0: only adjacent pairs (3); progress 1: all 6 pairs
    assert loss(s, y, progress=0.0).item() == pytest.approx(3 * math.log(2), rel=1e-6)
    assert loss(s, y, progress=1.0).item() == pytest.approx(6 * math.log(2), rel=1e-6)


def test_ranklist_ties_adjacent_to_the_hardest_negative():
    # one positive, negatives tied at 0: with skip 1 only the highest-scored negative is compared
    s = torch.tensor([[0.0, 2.0, -1.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    assert RankListLoss(form="exact")(s, y, progress=0.0).item() == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-6)


def test_pairwise_weights_per_pair():
    s = torch.tensor([[0.0, 0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    w = torch.zeros(1, 3, 3)
    w[0, 0, 1] = 1.0
    # RankNet: mean over the 2 pairs, only one weighted
    assert RankNetLoss()(s, y, weights=w).item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="pair weights"):
        RankNetLoss()(s, y, weights=torch.ones(1, 2, 2))


def test_shape_errors_name_the_loss():
    with pytest.raises(ValueError, match="ListNetLoss: labels shape"):
        ListNetLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unknown objective"):
        make_objective("nope")


def _listmle_of_order(s: list[float], order: list[int]) -> float:
    """The paper's ListMLE for one permutation (every position but the last contributes)."""
    v = [s[i] for i in order]
    return sum(math.log(sum(math.exp(x) for x in v[k:])) - v[k] for k in range(len(v)))


def test_listmle_random_ties_is_the_paper_loss_of_a_random_tie_order():
    import itertools

    s = [0.5, 2.0, -1.0, 0.3]
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    loss = ListMLELoss(ties="random")
    orders = {round(_listmle_of_order(s, [0, *rest]), 5) for rest in itertools.permutations([1, 2, 3])}
    torch.manual_seed(0)
    seen = {round(loss(torch.tensor([s]), y).item(), 5) for _ in range(200)}
    assert seen == orders  # every draw is one order of the tied negatives, and every order is drawn
    # distinct labels leave nothing to draw: the same value as the deterministic form
    graded = torch.tensor([[0.5, 1.0, -1.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    assert loss(*graded).item() == pytest.approx(ListMLELoss()(*graded).item(), rel=1e-6)


def test_listmle_random_ties_ignores_padding_and_pulls_tied_scores_together_on_average():
    torch.manual_seed(0)
    scores = torch.tensor([[1.0, 3.0, -2.0, 50.0]], requires_grad=True)
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    loss = ListMLELoss(ties="random")
    total = sum(loss(scores, labels, mask) for _ in range(400)) / 400
    total.backward()
    assert scores.grad[0, 3] == 0  # padding gets no gradient and no term
    assert scores.grad[0, 0] < 0  # the positive goes up
    assert scores.grad[0, 1] > 0 and scores.grad[0, 2] < 0  # the tied negatives move towards each other
    with pytest.raises(ValueError, match="ties"):
        ListMLELoss(ties="score")
