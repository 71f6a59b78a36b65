import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlkit.rewards import REGISTRY, RewardLoadError, load_reward
from rlkit.rewards.depth import delta1, neg_abs_rel, neg_l1, neg_l2
from rlkit.rewards.format import format_reward


def conv(text):
    return [{"role": "assistant", "content": text}]


BAD = [[{"role": "assistant", "content": [{"type": "text", "text": None}]}], "no number here", "<answer>-3</answer>", "<answer>0</answer>", "<answer>nan</answer>",
       "<answer>inf</answer>", "<answer>3 or 4</answer>", "", None, 42, ["weird"], [{"no": "role"}]]


def test_values_on_good_answers():
    c = [conv("<answer>4.0</answer>"), "The point is around 2.5 meters away from the camera."]
    gt = [4.5, 2.0]
    assert delta1(c, gt) == [1.0, 0.0]  # 4.5/4 = 1.125; 2.5/2 = 1.25 is not < 1.25
    assert neg_abs_rel(c, gt) == pytest.approx([-0.5 / 4.5, -0.25])
    assert neg_l1(c, gt) == [-0.5, -0.5]
    assert neg_l2(c, gt) == [-0.25, -0.25]


def test_delta1_threshold_is_strict():
    assert delta1(["<answer>5.0</answer>"], [4.0]) == [0.0]  # ratio exactly 1.25
    assert delta1(["<answer>4.99</answer>"], [4.0]) == [1.0]


def test_bad_completions_get_the_worst_finite_reward():
    gt = [3.0] * len(BAD)
    assert delta1(BAD, gt) == [0.0] * len(BAD)
    assert neg_l1(BAD, gt) == [-50.0] * len(BAD)
    assert neg_l2(BAD, gt, clip=100.0) == [-100.0] * len(BAD)
    assert neg_abs_rel(BAD, gt) == [-5.0] * len(BAD)
    assert format_reward(BAD) == [0.0] * len(BAD)


def test_absurd_values_are_clipped_and_finite():
    c = ["<answer>1e308</answer>"]
    assert neg_l2(c, [2.0]) == [-400.0] and neg_l1(c, [2.0]) == [-50.0] and neg_abs_rel(c, [2.0]) == [-5.0]
    assert neg_l1(c, [2.0], clip=10.0, scale=0.5) == [-5.0]


def test_bad_labels_do_not_raise():
    assert neg_l1(["<answer>2</answer>"] * 3, [float("nan"), -1.0, "x"]) == [-50.0] * 3


def test_format_reward():
    assert format_reward(["<answer>3.47</answer>", "<think>floor</think> <answer>3.47</answer>"]) == [1.0, 1.0]
    assert format_reward(["<answer>3.47</answer>"], require_think=True) == [0.0]
    assert format_reward(["3.47", "<answer>3.47</answer> extra", "<answer>a</answer>"]) == [0.0, 0.0, 0.0]


@given(st.lists(st.one_of(st.text(), st.none(), st.integers(), st.floats()), min_size=1, max_size=5),
       st.floats(allow_nan=True, allow_infinity=True))
def test_rewards_never_raise_or_return_nan(completions, gt):
    for fn in REGISTRY.values():
        out = fn(completions, label=[gt] * len(completions), task=["depth"] * len(completions))
        assert len(out) == len(completions)
        assert all(isinstance(v, float) and math.isfinite(v) for v in out)


def test_registry_names():
    assert set(REGISTRY) == {"delta1", "neg_abs_rel", "neg_l2", "neg_l1", "format"}


def test_load_reward_three_forms(tmp_path):
    fn = load_reward("neg_l1")
    assert fn(["<answer>4</answer>"], label=[3.0]) == neg_l1(["<answer>4</answer>"], label=[3.0]) == [-1.0]
    assert load_reward("rlkit.rewards.depth:neg_l2") is neg_l2
    fn = load_reward("rewards/close_enough.py:close_enough", {"tolerance": 0.5})
    assert fn(["<answer>4</answer>", "<answer>9</answer>"], label=[3.0, 3.0]) == [1.0, 0.0]


def test_a_bare_name_not_in_the_registry_is_a_plugin_in_rewards():
    fn = load_reward("close_enough", {"tolerance": 0.5})  # rewards/close_enough.py:close_enough
    assert fn(["<answer>4</answer>", "<answer>9</answer>"], label=[3.0, 3.0]) == [1.0, 0.0]
    from trl.trainer.utils import get_callable_name

    assert get_callable_name(load_reward("close_enough")) == "close_enough"
    with pytest.raises(RewardLoadError, match="unknown argument"):  # the same checks as any plugin
        load_reward("close_enough", {"tolerence": 0.5})


def test_trl_logs_a_reward_under_its_registry_name():
    from trl.trainer.utils import get_callable_name  # how GRPOTrainer names rewards/<name>/mean

    assert get_callable_name(load_reward("format")) == "format"  # the function is format_reward
    assert get_callable_name(load_reward("format", {"require_think": True})) == "format"
    assert get_callable_name(load_reward("neg_l1", {"clip": 3.0})) == "neg_l1"
    assert load_reward("format", {"require_think": True})(["<answer>3</answer>"]) == [0.0]
    # plugins keep their function's name, with or without arguments
    plugin = "rewards/close_enough.py:close_enough"
    assert get_callable_name(load_reward(plugin)) == get_callable_name(load_reward(plugin, {"tolerance": 0.5})) \
        == "close_enough"
    assert get_callable_name(load_reward("rlkit.rewards.format:format_reward")) == "format_reward"


def test_load_reward_errors_say_which_form_failed(tmp_path):
    with pytest.raises(RewardLoadError, match="as a registry name: not one of .*; as a plugin: no file rewards/neg_l3.py"):
        load_reward("neg_l3")
    with pytest.raises(RewardLoadError, match="as module:function: cannot import 'nope_pkg.mod'"):
        load_reward("nope_pkg.mod:f")
    with pytest.raises(RewardLoadError, match="as module:function: rlkit.rewards.depth has no function 'nope'"):
        load_reward("rlkit.rewards.depth:nope")
    with pytest.raises(RewardLoadError, match="as a file path: file .* not found"):
        load_reward("missing/reward.py:f")
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RewardLoadError, match="as a file path: importing .* failed: RuntimeError"):
        load_reward(f"{bad}:f")


def test_checked_reward_gives_each_reward_its_own_completions_and_refuses_huge_ints():
    from rlkit.rewards import RewardOutputError, checked_reward

    def vandal(completions, **kw):
        completions[0] = "<answer>999</answer>"  # edits the list it was given
        return [0.0] * len(completions)

    completions = ["<answer>3</answer>", "<answer>4</answer>"]
    checked_reward(vandal, "vandal")(completions, label=[3.0, 3.0])
    assert completions == ["<answer>3</answer>", "<answer>4</answer>"]
    assert checked_reward(load_reward("neg_l1"), "neg_l1")(completions, label=[3.0, 3.0]) == [0.0, -1.0]
    huge = checked_reward(lambda completions, **kw: [10 ** 400, 0], "huge")
    with pytest.raises(RewardOutputError, match="reward 'huge' returned 1000.* for completion 0"):
        huge(completions, label=[3.0, 3.0])
