"""Evaluation over the whole evaluation set, each example exactly once, on every strategy.

An Evaluator needs a model and the global step, nothing else: Evaluator.for_checkpoints
builds just those for --mode=eval and --mode=continuous_eval (no optimizer, no mixing, no
average to keep: a checkpoint's average of the weights is read into the model itself),
and a Trainer hands its own model and step to the one it evaluates with.
"""
from absl import logging
import tensorflow as tf

import input_pipeline
from official_resnet import distribute
from official_resnet import losses
from official_resnet import models
from official_resnet import progress
from official_resnet import run_state
from official_resnet.train import checkpointing
from official_resnet.train import phases


class Evaluator:
  """Evaluates `model` on `experiment`'s evaluation data under `strategy`; `step` is the
  global step variable of the weights evaluated and `run_plan` the run's phases.Plan."""

  def __init__(self, experiment, strategy, run_plan, model, step):
    self.config = experiment
    self.strategy = strategy
    self.plan = run_plan
    self.model = model
    self.step = step
    self.is_chief = distribute.is_chief(strategy)
    # What it reads of a checkpoint: no optimizer.
    self.checkpoint = checkpointing.state_checkpoint(model, step=step)
    self._evaluate_all = None

  @classmethod
  def for_checkpoints(cls, experiment, strategy=None):
    """An Evaluator of its own model, to read checkpoints of `experiment`'s run into."""
    strategy = strategy or distribute.build_strategy(experiment.runtime)
    run_plan = phases.plan(experiment, strategy.num_replicas_in_sync)
    with strategy.scope():
      model = models.build_model(experiment.model)
      step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    return cls(experiment, strategy, run_plan, model, step)

  @property
  def model_dir(self):
    return self.config.train.model_dir

  def current_step(self):
    return int(self.step.numpy())

  def restore(self, path):
    """Reads checkpoint `path`, with its average of the weights in the model's place when it
    has one (what the run evaluates); returns its step."""
    checkpointing.restore(path, self.checkpoint, weights="auto")
    return self.current_step()

  def restore_or_initialize(self):
    """Reads model_dir's latest checkpoint, else the whole init_checkpoint; returns the step.

    ValueError when there is neither, or when model_dir's config.json is of another model.
    """
    checkpointing.check_run_config(self.model_dir, self.config.model, self.plan.class_names)
    latest = tf.train.latest_checkpoint(self.model_dir)
    if latest:
      self.restore(latest)
      logging.info("Evaluating %s (step %d).", latest, self.current_step())
    elif self.config.train.init_checkpoint:
      checkpointing.initialize(self.model, self.config, "all")
    else:
      raise ValueError(
          "mode 'eval' needs a checkpoint in model_dir or an init_checkpoint. "
          f"Received: model_dir={self.model_dir!r} without checkpoints, init_checkpoint=None")
    return self.current_step()

  def evaluate(self):
    """Metrics of the model's weights as they are: progress.eval_result's dict (loss, top-1,
    top-5, examples, per-class precision, recall and F1, the confusion matrix)."""
    if self._evaluate_all is None:
      self._evaluate_all = self._make_evaluate_all()
    totals = self._evaluate_all()
    return progress.eval_result(progress.unpack_sums(totals["sums"].numpy()),
                                totals["confusion"].numpy(), self.plan.class_names)

  def reporter(self):
    """The progress.Reporter of an evaluation job: no progress bar, TensorBoard as configured."""
    return progress.Reporter(self.model_dir, self.plan.total_steps, active=self.is_chief,
                             tensorboard=self.config.train.enable_tensorboard,
                             progress_bar=False)

  def record(self, reporter, step, metrics):
    """Reports `metrics` of step `step` (log, TensorBoard, model_dir/eval/) and writes them to
    eval_stats.json (chief only); returns the stats written."""
    reporter.evaluate(step, metrics)
    reporter.close()
    stats = {"step": step, **progress.eval_fields(metrics)}
    if self.is_chief:
      run_state.write_stats(self.model_dir, stats, name=run_state.EVAL_STATS_FILE)
    return stats

  def _make_evaluate_all(self):
    """tf.function() -> {"sums": pack_sums of progress.SUM_NAMES, "confusion": [C, C]} summed
    over one pass of the eval set (loss_sum per example); confusion rows are true classes,
    columns predicted ones."""
    model, strategy = self.model, self.strategy
    num_classes = self.config.model.num_classes
    k = losses.top_k(num_classes)

    def batch_sums(images, labels):
      logits = model(images, training=False)
      loss = tf.reduce_sum(losses.per_example_crossentropy(labels, logits))
      top_1, top_k = losses.correct_counts(labels, logits, k)
      predictions = tf.argmax(tf.cast(logits, tf.float32), axis=-1, output_type=tf.int32)
      confusion = tf.math.confusion_matrix(tf.reshape(labels, [-1]), predictions,
                                           num_classes=num_classes, dtype=tf.float32)
      sums = progress.pack_sums({"loss_sum": loss, "top_1_correct": top_1,
                                 "top_k_correct": top_k, "examples": tf.shape(labels)[0]})
      return {"sums": sums, "confusion": confusion}

    if self.config.runtime.enable_xla:
      batch_sums = tf.function(batch_sums, jit_compile=True)

    def replica_eval(images, labels):
      # Replicas past the end of the eval set get empty batches, which the model must not
      # see: TF 2.21's oneDNN CPU convolution returns an empty input unchanged. One replica
      # reads every batch and the pipeline makes none empty, so it needs no cond (0.1 s of
      # the first evaluation's trace, ResNet-18).
      if strategy.num_replicas_in_sync == 1:
        return batch_sums(images, labels)
      return tf.cond(tf.shape(labels)[0] > 0, lambda: batch_sums(images, labels),
                     lambda: {"sums": tf.zeros([len(progress.SUM_NAMES)]),
                              "confusion": tf.zeros([num_classes, num_classes])})

    dataset = strategy.distribute_datasets_from_function(
        lambda context: input_pipeline.build_dataset(self.config.data, training=False,
                                                     input_context=context))

    def reduce_sum(per_replica):
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    # Traced as written (autograph would convert the source of every function it calls at
    # its first trace). Over an iterator: a loop over the dataset itself runs its body inside
    # the dataset's reduce, on the pipeline's one intra-op thread (0.56 s against 0.2 s for
    # 250 images at 32 px, ResNet-18, 2 cores).
    @tf.function(autograph=False)
    def evaluate_all():
      iterator = iter(dataset)

      def add_batch(_, sums, confusion):
        inputs = iterator.get_next_as_optional()

        def added():
          per_replica = strategy.run(replica_eval, args=inputs.get_value())
          # One reduce per value: MultiWorkerMirroredStrategy's reduce of a list stacks its
          # values, which fails for values of different shapes.
          return (sums + reduce_sum(per_replica["sums"]),
                  confusion + reduce_sum(per_replica["confusion"]))

        return (inputs.has_value(),
                *tf.cond(inputs.has_value(), added, lambda: (sums, confusion)))

      _, sums, confusion = tf.while_loop(
          lambda more, *_: more, add_batch,
          (tf.constant(True), tf.zeros([len(progress.SUM_NAMES)]),
           tf.zeros([num_classes, num_classes])))
      return {"sums": sums, "confusion": confusion}

    return evaluate_all
