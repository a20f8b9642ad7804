"""The benchmark harness: FLOP counting, the acceptance summary, and a quick end-to-end run."""
import dataclasses
import json
import math
import statistics

import keras
import pytest

from benchmarks import train_step
from benchmarks.train_step import Item
from official_resnet.models import ModelConfig
from official_resnet.models import build_model


def test_forward_flops_count_every_conv_and_dense_kernel():
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8 positions x 3*3*3*4
  x = keras.layers.Conv2D(6, 1, strides=2)(x)  # 4*4 x 1*1*4*6
  inner_in = keras.Input((4, 4, 6))
  inner = keras.Model(inner_in, keras.layers.Conv2D(8, 3, padding="same", groups=2)(inner_in))
  x = inner(x)  # nested model, grouped: 4*4 x 3*3*(6/2)*8
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(5)(x)  # 8*5
  model = keras.Model(inputs, outputs)
  multiply_adds = 8 * 8 * 27 * 4 + 4 * 4 * 24 + 4 * 4 * 9 * 3 * 8 + 8 * 5
  assert train_step.forward_flops_per_image(model) == 2 * multiply_adds


def test_resnet50_flops_match_the_published_counts():
  # torchvision lists 4.09 G multiply-adds for ResNet-50 v1.5; keras' v1 strides in the 1x1.
  ours = train_step.forward_flops_per_image(build_model(ModelConfig()))
  keras_v1 = train_step.forward_flops_per_image(keras.applications.ResNet50(weights=None))
  assert ours / 2 == pytest.approx(4.089e9, rel=1e-3)
  assert keras_v1 / 2 == pytest.approx(3.858e9, rel=1e-3)


def _result(name_item, **values):
  return {"name": name_item.name, **dataclasses.asdict(name_item), "status": "ok", **values}


def test_summary_ratios_name_their_items_and_check_targets():
  fp32_many = Item("train", "fp32", steps_per_loop=10)
  results = [
      _result(Item("conv_ceiling", "fp32"), gflops_per_second=200.0),
      _result(Item("train", "fp32"), images_per_second=5.0, gflops_per_second=120.0),
      _result(fp32_many, images_per_second=6.0, gflops_per_second=150.0),
      _result(Item("train", "bf16", steps_per_loop=10), images_per_second=9.0,
              gflops_per_second=225.0),
      # Its own synthetic windows in turn decide the ratio, not the synthetic item's 6.0.
      _result(Item("train", "fp32", input="real", steps_per_loop=10), images_per_second=5.4,
              gflops_per_second=135.0, real_over_synthetic_windows=[0.97, 0.9, 0.88]),
      _result(Item("keras_fit", "fp32"), images_per_second=5.0, gflops_per_second=110.0),
      # Faster than v1.5 (fewer FLOPs), so it must not count as the fp32 step.
      _result(Item("train", "fp32", steps_per_loop=10, variant="v1"), images_per_second=6.6,
              gflops_per_second=152.0),
      {"name": "train/synthetic/fp32/xla/spl1", **dataclasses.asdict(Item("train", xla=True)),
       "status": "failed"},
  ]
  summary = train_step.summarize(results)
  assert summary["fp32_over_keras_fit"] == {
      "value": 1.2, "target": 1.3, "met": False,
      "numerator": fp32_many.name, "denominator": "keras_fit/synthetic/fp32"}
  assert summary["fp32_v1_over_keras_fit"] == {
      "value": 1.32, "target": 1.3, "met": True,
      "numerator": "train/synthetic/fp32/spl10/v1", "denominator": "keras_fit/synthetic/fp32"}
  assert summary["fp32_fraction_of_conv_ceiling"]["value"] == 0.75
  assert summary["bf16_over_fp32"]["value"] == 1.5
  real = summary["real_over_synthetic/fp32"]
  assert (real["value"], real["met"], real["numerator"], real["denominator"]) == (
      0.9, False, "train/real/fp32/spl10", "train/real/fp32/spl10, synthetic windows in turn")


def test_stock_batch_norm_items_never_stand_for_our_step():
  # A run of comparison items only: a stock_bn bf16 item against the fused fp32 step
  # would be a different network, and a faster stock_bn fp32 item not our step.
  results = [
      _result(Item("train", "fp32", steps_per_loop=10), images_per_second=9.0,
              gflops_per_second=220.0),
      _result(Item("train", "fp32", steps_per_loop=10, fused_batch_norm=False),
              images_per_second=9.5, gflops_per_second=230.0),
      _result(Item("train", "bf16", steps_per_loop=10, fused_batch_norm=False),
              images_per_second=7.0, gflops_per_second=170.0),
      _result(Item("keras_fit", "fp32"), images_per_second=6.0, gflops_per_second=140.0),
  ]
  summary = train_step.summarize(results)
  assert "bf16_over_fp32" not in summary
  assert summary["fp32_over_keras_fit"]["numerator"] == "train/synthetic/fp32/spl10"
  assert summary["fp32_over_keras_fit"]["value"] == 1.5


def test_official_ratio_divides_our_step_of_the_same_settings_on_the_same_network():
  flops = {"forward_flops_per_image": 8.18e9}
  results = [
      _result(Item("train", "fp32", steps_per_loop=1), images_per_second=6.0,
              cpu_seconds_per_image=0.3, **flops),
      _result(Item("train", "fp32", steps_per_loop=10), images_per_second=6.6, **flops),
      _result(Item("official_train", "fp32", steps_per_loop=1), images_per_second=5.0,
              cpu_seconds_per_image=0.33, **flops),
      # A tiny model of ours (a --quick run) against the fixed 224 px official one: no ratio.
      _result(Item("train", "bf16", steps_per_loop=10), images_per_second=90.0,
              forward_flops_per_image=4e6),
      _result(Item("official_train", "bf16", steps_per_loop=10), images_per_second=9.0, **flops),
  ]
  summary = train_step.summarize(results)
  assert summary["train_over_official/fp32/spl1"] == {
      "value": 1.2, "target": 1.15, "met": True, "numerator": "train/synthetic/fp32/spl1",
      "denominator": "official_train/synthetic/fp32/spl1"}
  assert summary["train_over_official_cpu/fp32/spl1"]["value"] == 1.1
  assert not any(name.startswith("train_over_official/bf16") for name in summary)
  with pytest.raises(ValueError, match="official_train"):
    train_step.validate(train_step.BenchmarkConfig(), [Item("official_train", input="real")])


@pytest.mark.slow
def test_official_item_without_the_official_code_says_how_to_install_it(tmp_path):
  config = dataclasses.replace(train_step.QUICK_CONFIG, work_dir=str(tmp_path),
                               official_dir=str(tmp_path / "nowhere"))
  (result,) = train_step.run_benchmark(config, [Item("official_train")])["items"]
  assert result["status"] == "unavailable"
  assert "nowhere" in result["reason"] and "pip install --no-deps" in result["reason"]


def test_rounds_merge_into_the_median_round_with_every_window():
  def train_round(rate, windows, rss):
    return {**_result(Item("train"), images_per_second=rate, gflops_per_second=rate * 24.5),
            "window_images_per_second": windows, "peak_rss_bytes": rss, "wall_seconds": 10.0}
  rounds = [train_round(6.0, [5.9, 6.0], 100), train_round(5.0, [5.0, 5.1], 300),
            train_round(6.5, [6.5, 6.4], 200)]
  merged = train_step.merge_rounds(rounds)
  # The median round whole (its images/s and GFLOP/s agree), the spread from all rounds.
  assert (merged["images_per_second"], merged["gflops_per_second"]) == (6.0, 6.0 * 24.5)
  assert merged["round_figures"] == [6.0, 5.0, 6.5]
  assert merged["window_images_per_second"] == [5.9, 6.0, 5.0, 5.1, 6.5, 6.4]
  assert (merged["peak_rss_bytes"], merged["wall_seconds"]) == (300, 30.0)
  # Even counts take the lower median; ceilings merge on GFLOP/s.
  ceilings = [{**_result(Item("conv_ceiling"), gflops_per_second=g), "peak_rss_bytes": 1,
               "wall_seconds": 1.0} for g in (180.0, 160.0)]
  assert train_step.merge_rounds(ceilings)["gflops_per_second"] == 160.0
  real_rounds = [{**r, "real_over_synthetic_windows": [ratio]}
                 for r, ratio in zip(rounds, (0.93, 0.99, 0.95))]
  assert train_step.merge_rounds(real_rounds)["real_over_synthetic_windows"] == [0.93, 0.99, 0.95]
  failed = {"name": rounds[0]["name"], "status": "failed", "reason": "exit status 1"}
  assert train_step.merge_rounds([rounds[0], failed]) == failed


def test_bad_arguments_raise_value_errors_naming_them():
  config = train_step.BenchmarkConfig()
  with pytest.raises(ValueError, match="batch_size"):
    train_step.validate(dataclasses.replace(config, batch_size=0), [Item("train")])
  with pytest.raises(ValueError, match="input_private_threads.*Received: input_private_threads=0"):
    train_step.validate(dataclasses.replace(config, input_private_threads=0), [Item("train")])
  with pytest.raises(ValueError, match="precision.*Received: precision='fp8'"):
    train_step.validate(config, [Item("train", "fp8")])
  with pytest.raises(ValueError, match=r"items.*Received: items='nothing/\*'"):
    train_step.select_items(train_step.preset_items("cpu", config), "nothing/*")
  with pytest.raises(ValueError, match="preset"):
    train_step.preset_items("tpu", config)


def test_list_prints_the_selected_item_names(capsys):
  train_step.main(["--list", "--quick", "--items=train/synthetic/*,keras_fit/*"])
  assert capsys.readouterr().out.split() == [
      "train/synthetic/fp32/spl1", "train/synthetic/fp32/spl2",
      "train/synthetic/fp32/spl2/recipe_cost", "train/synthetic/fp32/spl2/v1",
      "train/synthetic/fp32/spl2/stock_bn", "train/synthetic/fp32/xla/spl1",
      "train/synthetic/bf16/spl2", "train/synthetic/bf16/spl2/stock_bn",
      "train/synthetic/bf16/xla/spl1", "keras_fit/synthetic/fp32", "keras_fit/synthetic/bf16"]


@pytest.mark.slow
def test_train_items_feed_the_step_what_trainer_train_feeds_it(tmp_path):
  config = dataclasses.replace(train_step.QUICK_CONFIG, work_dir=str(tmp_path))
  item = Item("train", steps_per_loop=1)
  trainer, _ = train_step.build_train_function(item, config, data_dir=None)
  assert trainer.normalizes_on_device
  images, labels = next(iter(train_step.train_batches(item, config, None, trainer)))
  assert images.dtype == "uint8" and images.shape == (4, 32, 32, 3)
  # keras.applications' fit gets no trainer and keeps the pipeline's normalized float32.
  assert next(iter(train_step.train_batches(item, config, None)))[0].dtype == "float32"
  results = train_step.steps_on_input(trainer, trainer.make_train_function(), item, config, None,
                                      1)()
  assert results["examples"] == 4 and 0 < results["loss_sum"] < 100  # a finite loss


@pytest.mark.slow
def test_quick_run_writes_a_consistent_report(tmp_path):
  config = dataclasses.replace(train_step.QUICK_CONFIG, work_dir=str(tmp_path / "work"))
  items = [Item("conv_ceiling"), Item("train", steps_per_loop=2),
           Item("train", input="real", steps_per_loop=2), Item("keras_fit"),
           Item("savedmodel_jpeg")]
  output = tmp_path / "report.json"
  report = train_step.run_benchmark(config, items, str(output))

  assert json.loads(output.read_text()) == json.loads(json.dumps(report))
  by_name = {r["name"]: r for r in report["items"]}
  assert list(by_name) == [item.name for item in items]
  assert all(r["status"] == "ok" for r in report["items"]), report["items"]
  for r in report["items"]:
    # Own subprocess per item: each has TF's footprint (hundreds of MiB) and its own peak.
    assert 100 * 2**20 < r["peak_rss_bytes"] < report["machine"]["memory_bytes"]
    assert r["cores_busy"] > 0

  conv = by_name["conv_ceiling/fp32"]
  assert conv["gflops_per_second"] == pytest.approx(
      3 / (1 / conv["forward_gflops_per_second"] + 2 / conv["backward_gflops_per_second"]))

  tiny_model_flops = train_step.forward_flops_per_image(build_model(ModelConfig(
      config.architecture, image_size=config.image_size, base_width=config.base_width)))
  for name in ("train/synthetic/fp32/spl2", "train/real/fp32/spl2", "keras_fit/synthetic/fp32"):
    r = by_name[name]
    rates = r["window_images_per_second"]
    assert len(rates) == config.num_windows and min(rates) > 0
    assert r["images_per_second"] == pytest.approx(statistics.median(rates), rel=1e-3)
    assert r["images_per_window"] % config.batch_size == 0
    assert r["gflops_per_second"] == pytest.approx(
        r["images_per_second"] * 3 * r["forward_flops_per_image"] / 1e9)
    assert r["fraction_of_conv_ceiling"] == round(
        r["gflops_per_second"] / conv["gflops_per_second"], 3)
  assert by_name["train/synthetic/fp32/spl2"]["forward_flops_per_image"] == tiny_model_flops
  assert by_name["train/real/fp32/spl2"]["images_per_window"] % (2 * config.batch_size) == 0
  # keras.applications.ResNet50 keeps its full width: far more FLOPs than the tiny model.
  assert by_name["keras_fit/synthetic/fp32"]["forward_flops_per_image"] > 10 * tiny_model_flops
  assert by_name["savedmodel_jpeg/fp32"]["images_per_second"] > 0

  summary = report["summary"]
  assert summary["fp32_fraction_of_conv_ceiling"]["value"] == round(
      by_name["train/synthetic/fp32/spl2"]["gflops_per_second"] / conv["gflops_per_second"], 3)
  real = by_name["train/real/fp32/spl2"]
  in_turn = real["synthetic_in_turn"]["window_images_per_second"]
  assert len(in_turn) == config.num_windows and min(in_turn) > 0
  assert real["real_over_synthetic_windows"] == [
      round(r / s, 4) for r, s in zip(real["window_images_per_second"], in_turn)]
  assert summary["real_over_synthetic/fp32"]["value"] == round(
      statistics.median(real["real_over_synthetic_windows"]), 3)
  assert math.isclose(summary["fp32_over_keras_fit"]["value"], round(
      by_name["train/synthetic/fp32/spl2"]["images_per_second"]
      / by_name["keras_fit/synthetic/fp32"]["images_per_second"], 3))
  table = train_step.format_table(report)
  assert all(name in table for name in by_name)


@pytest.mark.slow
def test_a_failing_item_is_reported_and_the_run_goes_on(tmp_path):
  config = dataclasses.replace(train_step.QUICK_CONFIG, work_dir=str(tmp_path),
                               architecture="resnet7")
  report = train_step.run_benchmark(config, [Item("train"), Item("matmul_ceiling")])
  failed, matmul = report["items"]
  assert failed["status"] == "failed"
  assert "architecture" in failed["log_tail"] and "resnet7" in failed["log_tail"]
  assert matmul["status"] == "ok" and matmul["gflops_per_second"] > 0


def test_recipe_cost_ratios_compare_each_variant_with_the_plain_step_in_turn():
  recipe = Item("train", "fp32", steps_per_loop=10, recipe_cost=True)
  results = [
      # Faster than the plain item here (another window of the machine's drift): it must not
      # stand for our step; its own plain windows in turn decide its ratios.
      _result(recipe, images_per_second=6.5, gflops_per_second=160.0, over_plain_windows={
          "mixup_cutmix": [0.99, 0.98, 1.0], "ema": [0.97, 0.96, 0.99],
          "mixup_cutmix_ema": [0.95, 0.96, 0.97]}, plain_step_seconds=5.0,
          added_seconds_per_step={"mixup_cutmix": 0.05, "ema": 0.1, "mixup_cutmix_ema": 0.15}),
      _result(Item("train", "fp32", steps_per_loop=10), images_per_second=6.0,
              gflops_per_second=150.0),
      _result(Item("keras_fit", "fp32"), images_per_second=5.0, gflops_per_second=110.0),
  ]
  summary = train_step.summarize(results)
  assert summary["fp32_over_keras_fit"]["numerator"] == "train/synthetic/fp32/spl10"
  assert summary["mixup_cutmix_over_plain/fp32"] == {
      "value": 0.99, "target": 0.97, "met": True,
      "numerator": "train/synthetic/fp32/spl10/recipe_cost: mixup_cutmix",
      "denominator": "train/synthetic/fp32/spl10/recipe_cost: plain, in turn"}
  assert (summary["ema_over_plain/fp32"]["value"], summary["ema_over_plain/fp32"]["met"]) == (0.97, True)
  assert summary["mixup_cutmix_ema_over_plain/fp32"]["met"] is False
  # The added work timed alone, on top of the plain step: 5 / (5 + 0.15).
  assert summary["mixup_cutmix_ema_added_over_plain/fp32"] == {
      "value": 0.971, "target": 0.97, "met": True,
      "numerator": "train/synthetic/fp32/spl10/recipe_cost: mixup_cutmix_ema alone",
      "denominator": "train/synthetic/fp32/spl10/recipe_cost: plain, in turn"}
  with pytest.raises(ValueError, match=r"`recipe_cost` applies to kind='train' only"):
    train_step.validate(train_step.BenchmarkConfig(), [Item("keras_fit", recipe_cost=True)])


@pytest.mark.slow
def test_recipe_cost_item_times_every_variant_in_turn(tmp_path):
  # In this process: the item's own subprocess runs this same function (quick run test).
  config = dataclasses.replace(train_step.QUICK_CONFIG, work_dir=str(tmp_path))
  item = Item("train", steps_per_loop=2, recipe_cost=True)
  result = train_step.measure(item, config, data_dir=None)
  variants = result["variants_in_turn"]
  assert list(variants) == ["plain", *train_step.RECIPE_VARIANTS]
  for variant in variants.values():
    assert len(variant["window_images_per_second"]) == config.num_windows
    assert min(variant["window_images_per_second"]) > 0
  assert result["window_images_per_second"] == variants["mixup_cutmix_ema"]["window_images_per_second"]
  assert result["over_plain_windows"]["ema"] == [
      round(rate / base, 4) for rate, base in zip(variants["ema"]["window_images_per_second"],
                                                  variants["plain"]["window_images_per_second"])]
  assert set(result["added_seconds_per_step"]) == set(train_step.RECIPE_VARIANTS)
  assert 0 < result["added_seconds_per_step"]["ema"] < result["plain_step_seconds"]
  assert result["added_seconds_per_step"]["mixup_cutmix_ema"] == pytest.approx(
      result["added_seconds_per_step"]["mixup_cutmix"] + result["added_seconds_per_step"]["ema"])
  assert result["plain_step_seconds"] == pytest.approx(
      config.batch_size / variants["plain"]["images_per_second"])
  assert set(train_step.summarize([_result(item, **result)])) == {
      f"{name}_{kind}over_plain/fp32" for name in train_step.RECIPE_VARIANTS
      for kind in ("", "added_")}
