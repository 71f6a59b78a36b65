import math

from hypothesis import given
from hypothesis import strategies as st

from rlkit.camera import Camera
from rlkit.prompts import Query, answer, parse_answer, question

CAM = Camera(1000.0, 1000.0, 600.0, 400.0, 1200, 800)


def test_paper_sft_wording():
    q = Query("depth", CAM, 600, 400, 3.4671)
    assert question(q, reference="marker", strategy="unify_focal", template="sft") == \
        "How many meters is this point from the camera?"
    assert answer(q, strategy="unify_focal", template="sft") == "The point is around 3.47 meters away from the camera."


def test_text_reference_and_intrinsics_in_prompt():
    q = Query("depth", CAM, 17, 33, 2.0)
    text = question(q, reference="text", strategy="intrinsics_in_prompt", template="sft")
    assert text == ("This image was taken by a camera where the camera intrinsics are (fx = 1000.0, fy = 1000.0, "
                    "cx = 600.0, cy = 400.0). Given this image of size (width = 1200, height = 800), "
                    "how far is the pixel at (17, 33) from the camera?")


def test_predict_rays_answer_has_direction_then_depth():
    q = Query("depth", CAM, 1600, 400 - 1000, 5.0)  # 45 deg right, 45 deg up
    a = answer(q, strategy="predict_rays", template="sft")
    assert a == "The point is around 45.0 degrees to the right, 45.0 degrees above and 5.00 meters away from the camera."
    assert parse_answer(a) == 5.0


def test_brightness_wording_and_parser():
    q = Query("brightness", CAM, 1, 1, 0.4649)
    assert answer(q, strategy="unify_focal", template="sft") == "The brightness at this point is around 0.46."
    assert question(q, reference="marker", strategy="unify_focal", template="grpo").endswith(
        "then give the brightness as a single number inside <answer> </answer> tags.")
    assert answer(q, strategy="unify_focal", template="grpo") == "<answer>0.46</answer>"
    assert parse_answer("The brightness at this point is around 0.46.", "brightness") == 0.46
    assert parse_answer("<think>0.2?</think><answer>0.3</answer>", "brightness") == 0.3
    assert parse_answer("around .05", "brightness") == 0.05
    assert parse_answer("<answer>0.1 or 0.2</answer>", "brightness") is None
    for bad in ("-0.2", "0.00", "dark", "", None, 0.5, "nan", "1e999"):
        assert parse_answer(bad, "brightness") is None
    assert parse_answer("3.47 meters", "depth") == 3.47 and parse_answer("0.5", "axis_depth") == 0.5


def test_grpo_template():
    q = Query("depth", CAM, 1, 1, 12.345)
    assert question(q, reference="marker", strategy="unify_focal", template="grpo").endswith(
        "inside <answer> </answer> tags.")
    assert answer(q, strategy="unify_focal", template="grpo") == "<answer>12.35</answer>"


def test_parse_answer_depth_rules():
    assert parse_answer("The point is around 3.47 meters away from the camera.") == 3.47
    assert parse_answer("<think>maybe 2 or 3</think><answer>3.5</answer>") == 3.5
    assert parse_answer("<answer>3.5 m</answer>") == 3.5
    assert parse_answer("<answer>3 or 4</answer>") is None  # several answers
    assert parse_answer("<answer></answer>") is None
    assert parse_answer("4.2") == 4.2 and parse_answer(" 4.2m ") == 4.2
    assert parse_answer("about 7 metres") == 7.0
    assert parse_answer("-3 meters") is None and parse_answer("0 meters") is None
    assert parse_answer("1e999 meters") is None and parse_answer("nan meters") is None
    assert parse_answer("I have no idea") is None and parse_answer("") is None
    assert parse_answer(None) is None and parse_answer(3.0) is None
    assert parse_answer("1e308 meters") == 1e308


@given(st.text())
def test_parse_answer_never_raises(text):
    v = parse_answer(text)
    assert v is None or (math.isfinite(v) and v > 0)


def test_parser_work_grows_linearly_with_hostile_text():
    # quadratic backtracking took 136 s on 64k digits; 200k characters must stay far below a second
    import time

    from rlkit.prompts import parse_answer

    for text in ("1" * 200_000 + " x", "<answer>" * 25_000, "1 " * 100_000 + "m", "3" * 100_000 + " meters"):
        start = time.perf_counter()
        parse_answer(text)
        assert time.perf_counter() - start < 2.0, text[:20]
    assert parse_answer("٣.٥ m") == 3.5  # Unicode digits are digits, as for float() and the format reward
