"""The command's flags, one row each: its type, default, help, and the settings it sets.

The one place a flag is declared. main.py defines the rows in absl (table.define); the
map FLAG_FIELDS, which a run in model_dir is merged with (run_state.with_saved_run), and
the --helpshort groups come from the same rows. Flag names follow the official
resnet_ctl_imagenet_main.py where one exists; official names without one of ours are rows
of official_flags.py. A new flag is one row here, in the group a user looks for it in.
"""
from input_pipeline import augment
from input_pipeline import constants
from input_pipeline.config import DataConfig
from input_pipeline.config import SOURCES
from official_resnet import config as config_lib
from official_resnet import distribute
from official_resnet import official_flags
from official_resnet import predict
from official_resnet.cli import table
from official_resnet.cli.table import alias
from official_resnet.cli.table import flag
from official_resnet.cli.table import Group
from official_resnet.models.config import ARCHITECTURES
from official_resnet.models.config import CONV_PADDINGS
from official_resnet.models.config import DATA_FORMATS
from official_resnet.models.config import ModelConfig
from official_resnet.models.config import POOL_PADDINGS
from official_resnet.models.config import RESNET_VARIANTS

# The modes of main.MODES, in --mode's order.
MODES = ("train_and_eval", "train", "eval", "continuous_eval", "export", "predict")

_DATA, _MODEL, _TRAIN = DataConfig(), ModelConfig(), config_lib.TrainConfig()
_OPTIMIZER, _SCHEDULE = config_lib.OptimizerConfig(), config_lib.ScheduleConfig()
_RUNTIME, _EXPORT = config_lib.RuntimeConfig(), config_lib.ExportConfig()

WEIGHTS_FIELDS = official_flags.WEIGHTS_FIELDS  # what travels with the weights
OPTIMIZER_FIELDS = ("train.optimizer",)
SCHEDULE_FIELDS = ("train.schedule", "train.phases")

_RUN_FLAGS = (
    flag("mode", "enum", "train_and_eval", enum_values=list(MODES), help="What to run."),
    flag("model_dir", "string", _TRAIN.model_dir,
         help="Checkpoints, config.json, stats.json and TensorBoard summaries. Rerunning the "
              "same command resumes from its latest checkpoint."),
    flag("data_dir", "string", None, sets=("data.data_dir", "data.source"),
         help="imagenet: TFRecord folder; folder: image root; tfds: TFDS data_dir."),
    flag("batch_size", "integer", _DATA.batch_size, sets=("data.batch_size",), lower_bound=1,
         help="Global batch size over all replicas."),
    flag("train_epochs", "float", _TRAIN.train_epochs, sets=("train.train_epochs",),
         help="Epochs to train."),
    flag("train_steps", "integer", None, sets=("train.train_steps",), lower_bound=1,
         help="Total steps to train; replaces --train_epochs when set."),
    flag("epochs_between_evals", "float", _TRAIN.epochs_between_evals,
         sets=("train.epochs_between_evals",),
         help="Epochs between evaluations (train_and_eval) and history entries."),
    flag("seed", "integer", None, sets=("data.seed", "runtime.seed"),
         help="Seeds weights, data order and augmentation; with it a resumed run equals an "
              "uninterrupted one."),
    flag("check_memory", "boolean", True,
         help="Before training, estimate the train step's memory and refuse a run that cannot "
              "fit the machine (or each GPU), naming a batch size that fits."),
)

_DATA_FLAGS = (
    flag("source", "enum", None, sets=("data.source",), enum_values=list(SOURCES),
         help="Where the images come from. Default: the run's in --model_dir, else what "
              "--data_dir holds (class folders or <class>.<id>.jpg images: folder; TFRecord "
              "shards: imagenet; a prepared TFDS data set: tfds); synthetic without --data_dir."),
    flag("tfds_name", "string", None, sets=("data.tfds_name",),
         help="source=tfds: the TFDS data set, e.g. cats_vs_dogs."),
    flag("train_split", "string", _DATA.train_split, sets=("data.train_split",),
         help="Training split (tfds; folder subfolder)."),
    flag("eval_split", "string", _DATA.eval_split, sets=("data.eval_split",),
         help="Evaluation split (tfds; folder subfolder)."),
    flag("train_file_pattern", "string", _DATA.train_file_pattern,
         sets=("data.train_file_pattern",), help="imagenet: training shard glob."),
    flag("eval_file_pattern", "string", _DATA.eval_file_pattern, sets=("data.eval_file_pattern",),
         help="imagenet: validation shard glob."),
    flag("label_offset", "integer", _DATA.label_offset, sets=("data.label_offset",),
         help="imagenet: subtracted from the record labels (1: labels 1..1000 -> 0..999)."),
    flag("normalization", "enum", None, sets=("data.normalization",),
         enum_values=list(constants.NORMALIZATION_MODES),
         help="Pixel normalization. Default: what the weights were trained with (a .h5 file: "
              "caffe; our checkpoint: its run's config.json), else --scratch_normalization."),
    flag("validation_fraction", "float", _DATA.validation_fraction,
         sets=("data.validation_fraction",),
         help="folder without a validation subfolder: fraction held out."),
    flag("shuffle_buffer_size", "integer", _DATA.shuffle_buffer_size,
         sets=("data.shuffle_buffer_size",), lower_bound=1, help="Examples in the shuffle buffer."),
    flag("synthetic_num_examples", "integer", _DATA.synthetic_num_examples,
         sets=("data.synthetic_num_examples",), lower_bound=1,
         help="source=synthetic: examples per split."),
    flag("use_synthetic_data", "boolean", False, sets=("data.source",),
         help="Same as --source=synthetic."),
    flag("training_dataset_cache", "boolean", _DATA.cache, sets=("data.cache",),
         help="Cache the decoded training records in memory."),
    flag("datasets_num_private_threads", "integer", None, sets=("data.private_threads",),
         lower_bound=1, help="Private tf.data thread pool size; default: the shared pool."),
)

_MODEL_FLAGS = (
    flag("architecture", "enum", _MODEL.architecture, sets=("model.architecture",),
         enum_values=list(ARCHITECTURES), help="Model architecture."),
    flag("variant", "enum", _MODEL.variant, sets=("model.variant",),
         enum_values=list(RESNET_VARIANTS),
         help="ResNet variant: v1.5 (official, stride in the 3x3) or v1 (keras.applications). "
              "Default: the weights' (--pretrained, --init_checkpoint), else v1.5."),
    flag("num_classes", "integer", _MODEL.num_classes,
         sets=("model.num_classes", "data.num_classes"), lower_bound=1,
         help="Classes of the data and the logits. Default: the run's in --model_dir, else an "
              "image folder's class count, else 1000 (ImageNet)."),
    flag("image_size", "integer", _MODEL.image_size, sets=("model.image_size", "data.image_size"),
         lower_bound=constants.MIN_IMAGE_SIZE, help="Square input size in pixels."),
    flag("base_width", "integer", _MODEL.base_width, sets=("model.base_width",), lower_bound=1,
         help="Channels of the first stage (64 published)."),
    flag("pooling", "enum", _MODEL.pooling, sets=("model.pooling",),
         enum_values=["avg", "max", "none"], help="Pooling before the head; 'none' flattens."),
    flag("head_hidden_units", "list", [], sets=("model.head",),
         help="Hidden Dense widths of the head, e.g. 4096,4096."),
    flag("head_dropout", "float", _MODEL.head.dropout, sets=("model.head",),
         help="Dropout before the logits (and after hidden layers)."),
    flag("head_activation", "string", _MODEL.head.activation, sets=("model.head",),
         help="Activation of the hidden head layers."),
    flag("vgg_batch_norm", "boolean", _MODEL.vgg_batch_norm, sets=("model.vgg_batch_norm",),
         help="VGG with BatchNorm after each conv."),
    flag("sync_batch_norm", "boolean", _MODEL.sync_batch_norm, sets=("model.sync_batch_norm",),
         help="BatchNorm moments over the global batch (all replicas and workers), as one "
              "replica would compute them; default: each replica's own part."),
    flag("zero_init_residual", "boolean", _MODEL.zero_init_residual,
         sets=("model.zero_init_residual",),
         help="Zero-initialise the last BN gamma of each residual block."),
    flag("weight_decay", "float", _MODEL.weight_decay, sets=("model.weight_decay",),
         help="L2 factor on conv/dense kernels (the official 1e-4)."),
    flag("normalize_in_model", "boolean", False,
         sets=("model.input_normalization", "data.output_dtype"),
         help="The pipeline outputs raw uint8 pixels and the model normalizes them."),
    flag("data_format", "enum", None, sets=("model.data_format",),
         enum_values=[f for f in DATA_FORMATS if f],
         help="Layout inside the model; default Keras' image_data_format (channels_last)."),
    flag("dtype", "enum", next(name for name, policy in config_lib.DTYPE_POLICIES.items()
                                if policy == _MODEL.dtype_policy),
         sets=("model.dtype_policy",), enum_values=list(config_lib.DTYPES),
         help="Compute precision; fp16 adds dynamic loss scaling. Variables stay float32."),
)

_WEIGHTS_FLAGS = (
    flag("pretrained", "string", None, sets=WEIGHTS_FIELDS,
         help="Weights to start a new run from: a keras.applications .h5/.weights.h5 file "
              "(ResNet v1), a torchvision/timm .pth/.pt/.bin/.safetensors file (ResNet v1.5), or "
              "a name: imagenet (keras.applications), torchvision, torchvision:IMAGENET1K_V2, "
              "hf://timm/resnet50.a1_in1k. Our own checkpoints go to --init_checkpoint."),
    flag("init_checkpoint", "string", None, sets=WEIGHTS_FIELDS,
         help="Start a new run from these weights: keras.applications .h5/.weights.h5, a "
              "checkpoint prefix or a model_dir."),
    flag("init_checkpoint_scope", "enum", _TRAIN.init_checkpoint_scope,
         sets=("train.init_checkpoint_scope",),
         enum_values=list(config_lib.INIT_CHECKPOINT_SCOPES),
         help="backbone: the head keeps its fresh initialization; all: the head too."),
    flag("expect_weights", "boolean", False,
         help="The recipe starts from weights: warn when neither --pretrained nor "
              "--init_checkpoint is given (it then trains from scratch)."),
    flag("scratch_normalization", "enum", _DATA.normalization, sets=("data.normalization",),
         enum_values=list(constants.NORMALIZATION_MODES),
         help="Pixel normalization without weights and without --normalization."),
    flag("trainable", "string", config_lib.TRAINABLE_ALL, sets=("train.phases",),
         help="One phase: what trains. all; head (backbone frozen, its BatchNorm in inference "
              "mode); or a stage (resnet conv1..conv5, vgg block1..block5) and all after it."),
    flag("phases", "list", [], sets=("train.phases",),
         help="Phases trained one after the other, each named by what it trains (as "
              "--trainable), e.g. head,conv4; lengths from --phase_epochs or --phase_steps. "
              "Rerunning resumes inside any phase."),
    flag("phase_epochs", "list", [], sets=("train.phases",),
         help="--phases: epochs of each phase, e.g. 3,5."),
    flag("phase_steps", "list", [], sets=("train.phases",),
         help="--phases: steps of each phase; replaces --phase_epochs when set."),
    flag("phase_learning_rates", "list", [], sets=("train.phases",),
         help="--phases: --base_learning_rate of each phase, e.g. 0.01,0.001; default "
              "--base_learning_rate for all. The other schedule flags apply to each phase."),
    flag("conv_padding", "enum", None, sets=("model.conv_padding",),
         enum_values=list(CONV_PADDINGS),
         help="ResNet's strided 3x3 convolutions: same (TF) or symmetric (torchvision, timm). "
              "Default: the weights', else same."),
    flag("pool_padding", "enum", None, sets=("model.pool_padding",),
         enum_values=list(POOL_PADDINGS),
         help="ResNet's 3x3/2 stem max pool: same (the official model: 0 before, 1 after) or "
              "symmetric (1 on every side: keras.applications, torchvision, timm). Default: the "
              "weights', else the variant's (v1.5: same; v1: symmetric)."),
    flag("eval_resize_size", "integer", None, sets=("data.eval_resize_size",),
         lower_bound=constants.MIN_IMAGE_SIZE,
         help="Eval: shorter side before the centre crop. Default: the published protocol of the "
              "weights, else image_size / 0.875."),
    flag("eval_resize_method", "enum", None, sets=("data.eval_resize_method",),
         enum_values=list(constants.EVAL_RESIZE_METHODS),
         help="Eval: how the shorter side is resized. Default: the weights' published protocol, "
              "else bilinear (the official kernel)."),
)

_SCHEDULE_FLAGS = (
    flag("optimizer", "enum", _OPTIMIZER.name, sets=OPTIMIZER_FIELDS,
         enum_values=list(config_lib.OPTIMIZERS), help="Optimizer."),
    flag("momentum", "float", _OPTIMIZER.momentum, sets=OPTIMIZER_FIELDS,
         help="sgd, rmsprop, lars: momentum."),
    flag("nesterov", "boolean", _OPTIMIZER.nesterov, sets=OPTIMIZER_FIELDS,
         help="sgd, lars: Nesterov momentum."),
    flag("adam_beta_1", "float", _OPTIMIZER.beta_1, sets=OPTIMIZER_FIELDS,
         help="adam/adamw/lamb: beta_1."),
    flag("adam_beta_2", "float", _OPTIMIZER.beta_2, sets=OPTIMIZER_FIELDS,
         help="adam/adamw/lamb: beta_2."),
    flag("adam_epsilon", "float", _OPTIMIZER.epsilon, sets=OPTIMIZER_FIELDS,
         help="adam/adamw/lamb/rmsprop: epsilon."),
    flag("decoupled_weight_decay", "float", _OPTIMIZER.weight_decay, sets=OPTIMIZER_FIELDS,
         help="Decoupled weight decay (variable -= lr * decay * variable) for every optimizer; "
              "lars decays inside its trust ratio. BatchNorm and biases are exempt. Consider "
              "--weight_decay=0 (the model's L2) with it."),
    alias("adamw_weight_decay", "decoupled_weight_decay"),
    flag("rmsprop_rho", "float", _OPTIMIZER.rho, sets=OPTIMIZER_FIELDS,
         help="rmsprop: decay of the squared-gradient average."),
    flag("lars_trust_coefficient", "float", _OPTIMIZER.lars_trust_coefficient,
         sets=OPTIMIZER_FIELDS, help="lars: trust coefficient (eta) of the layer-wise rate."),
    flag("lr_schedule", "enum", _SCHEDULE.name, sets=SCHEDULE_FIELDS,
         enum_values=list(config_lib.SCHEDULES),
         help="piecewise: linear warm-up, then x lr_decay_factor at lr_decay_epochs; cosine: "
              "warm-up then cosine decay to the phase's end; constant; step, exponential, "
              "polynomial: warm-up then Keras' decay (see the training recipe flags). Without "
              "epochs given, piecewise and cosine take the official shape's fractions of the "
              "phase (warm-up 5/90, decays at 30/90, 60/90, 80/90): the official schedule over "
              "90 epochs."),
    flag("base_learning_rate", "float", _SCHEDULE.base_learning_rate, sets=SCHEDULE_FIELDS,
         help="Peak learning rate per lr_base_batch_size examples."),
    flag("lr_base_batch_size", "integer", _SCHEDULE.base_batch_size, sets=SCHEDULE_FIELDS,
         lower_bound=0,
         help="Peak rate = base_learning_rate * batch_size / this; 0: base_learning_rate as is."),
    flag("warmup_epochs", "float", _SCHEDULE.warmup_epochs, sets=SCHEDULE_FIELDS,
         help="Linear warm-up epochs (piecewise, cosine); default 5/90 of the phase."),
    flag("lr_decay_epochs", "list", [], sets=SCHEDULE_FIELDS,
         help="piecewise: epochs where the rate is multiplied by lr_decay_factor; default 30/90, "
              "60/90 and 80/90 of the phase (the official 30,60,80 over 90 epochs)."),
    flag("lr_decay_factor", "float", _SCHEDULE.decay_factor, sets=SCHEDULE_FIELDS,
         help="piecewise: multiplier at each decay epoch."),
    flag("cosine_alpha", "float", _SCHEDULE.cosine_alpha, sets=SCHEDULE_FIELDS,
         help="cosine: final rate as a fraction of the peak."),
    flag("lr_decay_every_epochs", "float", _SCHEDULE.decay_every_epochs, sets=SCHEDULE_FIELDS,
         help="step: multiply the rate by lr_decay_factor every this many epochs; exponential: "
              "the same decay, continuously."),
    flag("polynomial_power", "float", _SCHEDULE.polynomial_power, sets=SCHEDULE_FIELDS,
         help="polynomial: power of the decay from the peak to its end after warm-up."),
    flag("polynomial_end_fraction", "float", _SCHEDULE.polynomial_end_fraction,
         sets=SCHEDULE_FIELDS, help="polynomial: final rate as a fraction of the peak."),
)

_RECIPE_FLAGS = (
    flag("label_smoothing", "float", _TRAIN.label_smoothing, sets=("train.label_smoothing",),
         help="Label smoothing of the training loss."),
    flag("loss", "enum", _TRAIN.loss, sets=("train.loss",), enum_values=list(config_lib.LOSSES),
         help="softmax: cross-entropy; bce: binary cross-entropy per class on the (smoothed, "
              "mixed) one-hot targets, averaged over classes, as timm's."),
    flag("bce_target_threshold", "float", _TRAIN.bce_target_threshold,
         sets=("train.bce_target_threshold",),
         help="loss=bce: targets above it become 1, the rest 0. Default: None, soft targets."),
    flag("mixup_alpha", "float", _TRAIN.mixup_alpha, sets=("train.mixup_alpha",), lower_bound=0,
         help="MixUp's Beta(alpha, alpha) weight, on the device in the train step; 0: off."),
    flag("cutmix_alpha", "float", _TRAIN.cutmix_alpha, sets=("train.cutmix_alpha",), lower_bound=0,
         help="CutMix's Beta(alpha, alpha) weight; 0: off."),
    flag("mix_prob", "float", _TRAIN.mix_prob, sets=("train.mix_prob",),
         help="Probability of mixing a batch (or example) at all."),
    flag("mix_switch_prob", "float", _TRAIN.mix_switch_prob, sets=("train.mix_switch_prob",),
         help="With both alphas: probability of CutMix rather than MixUp."),
    flag("mix_mode", "enum", _TRAIN.mix_mode, sets=("train.mix_mode",),
         enum_values=list(config_lib.MIX_MODES),
         help="batch: one mixing per batch (per replica); elem: one per example."),
    flag("gradient_clip_norm", "float", _TRAIN.gradient_clip_norm,
         sets=("train.gradient_clip_norm",),
         help="Clip the gradient, summed over replicas, to this global norm. Default: None, no "
              "clipping."),
    flag("ema_decay", "float", _TRAIN.ema_decay, sets=("train.ema_decay",),
         help="Keep an exponential moving average of the weights (BatchNorm statistics included) "
              "with this decay, e.g. 0.9999; evaluation, the best checkpoint and exports use it. "
              "Default: None, no average."),
    flag("ema_warmup", "boolean", _TRAIN.ema_warmup, sets=("train.ema_warmup",),
         help="Decay min(ema_decay, (1 + n) / (10 + n)) after n updates."),
    flag("eval_image_size", "integer", None,
         sets=("data.eval_image_size", "model.any_input_size", "data.eval_resize_size"),
         lower_bound=constants.MIN_IMAGE_SIZE,
         help="Evaluation and export image size; default --image_size. Train smaller than you "
              "test (FixRes: --image_size=160 --eval_image_size=224); needs global pooling, not "
              "--pooling=none."),
    flag("train_crop_area_range", "list", [str(v) for v in _DATA.train_crop_area_range],
         sets=("data.train_crop_area_range",),
         help="low,high: the random train crop's fraction of the image (timm: 0.08,1)."),
    flag("train_crop_aspect_range", "list", [str(v) for v in _DATA.train_crop_aspect_range],
         sets=("data.train_crop_aspect_range",),
         help="low,high: the random train crop's width / height (timm: 0.75,1.3333)."),
    flag("eval_crop_fraction", "float", _DATA.eval_crop_fraction,
         sets=("data.eval_crop_fraction", "data.eval_resize_size"),
         help="Evaluation and export: the shorter side is resized to the eval size / this, then "
              "the centre is cropped (timm's crop_pct; 1: no margin)."),
    flag("random_flip", "boolean", _DATA.random_flip, sets=("data.random_flip",),
         help="The random horizontal flip of each training crop (the official recipe's; timm: "
              "--hflip 0.5). --norandom_flip for digits, text and other images whose mirror "
              "image is not the same class."),
    flag("color_jitter", "float", _DATA.color_jitter, sets=("data.color_jitter",),
         help="Brightness, contrast and saturation each scaled by a factor in [1-x, 1+x] (timm: "
              "0.4); 0: off."),
    flag("autoaugment", "enum", _DATA.autoaugment, sets=("data.autoaugment",),
         enum_values=list(augment.AUTOAUGMENT_POLICIES),
         help="AutoAugment policy (v0: the ImageNet policy of the Model Garden and timm); "
              "default off."),
    flag("randaugment_layers", "integer", _DATA.randaugment_layers,
         sets=("data.randaugment_layers",), lower_bound=0,
         help="RandAugment: ops applied per image (usually 2); 0: off."),
    flag("randaugment_magnitude", "float", _DATA.randaugment_magnitude,
         sets=("data.randaugment_magnitude",),
         help="RandAugment: magnitude of every op, 0-10 (timm's m, e.g. 9; RSB A3: 6)."),
    flag("randaugment_magnitude_std", "float", _DATA.randaugment_magnitude_std,
         sets=("data.randaugment_magnitude_std",),
         help="RandAugment: Gaussian noise on each op's magnitude (timm's mstd, e.g. 0.5)."),
    flag("randaugment_variant", "enum", _DATA.randaugment_variant,
         sets=("data.randaugment_variant",), enum_values=list(augment.RANDAUGMENT_VARIANTS),
         help="RandAugment ops and scaling: model_garden (16 ops and a no-op, every drawn op "
              "applied) or timm (its rand-...-inc1: 15 ops growing with the magnitude, each "
              "applied with probability 0.5). Ops as PIL's; 9 unlike the Model Garden's: "
              "docs/training.md."),
    flag("random_erasing_probability", "float", _DATA.random_erasing_probability,
         sets=("data.random_erasing_probability",),
         help="Random erasing: probability of one rectangle of per-pixel noise per image (timm's "
              "reprob, e.g. 0.25); 0: off."),
    flag("random_erasing_area_range", "list", [str(v) for v in _DATA.random_erasing_area_range],
         sets=("data.random_erasing_area_range",),
         help="low,high: the erased rectangle's fraction of the image."),
)

_LOGS_FLAGS = (
    flag("log_steps", "integer", _TRAIN.log_steps, sets=("train.log_steps",), lower_bound=1,
         help="Steps between log lines and TensorBoard scalars."),
    flag("steps_per_loop", "integer", None, sets=("train.steps_per_loop",), lower_bound=1,
         help="Steps per call of the compiled train function (custom loop); default one epoch."),
    flag("enable_tensorboard", "boolean", _TRAIN.enable_tensorboard,
         sets=("train.enable_tensorboard",),
         help="Write TensorBoard scalars to model_dir/train and model_dir/eval "
              "(--noenable_tensorboard: none)."),
    flag("checkpoint_steps", "integer", None, sets=("train.checkpoint_steps",), lower_bound=1,
         help="Steps between checkpoints; default one epoch."),
    flag("keep_checkpoints", "integer", _TRAIN.keep_checkpoints, sets=("train.keep_checkpoints",),
         lower_bound=1, help="Checkpoints kept in model_dir."),
    flag("best_metric", "enum", _TRAIN.best_metric, sets=("train.best_metric",),
         enum_values=[*config_lib.BEST_METRICS, "none"],
         help="Keep the checkpoint with the best value of this eval metric in model_dir/best "
              "(best.json beside it): by default the best top-1 of a run that evaluates; "
              "none: keep none."),
    flag("nan_policy", "enum", _TRAIN.nan_policy, sets=("train.nan_policy",),
         enum_values=list(config_lib.NAN_POLICIES),
         help="A step whose loss (fp32/bf16: or gradients) is NaN or Inf: stop the run, keeping "
              "the last good checkpoint, or skip that step's update (custom loop). fp16 loss "
              "scaling skips overflowing gradients either way."),
    flag("training_loop", "enum", _TRAIN.training_loop, sets=("train.training_loop",),
         enum_values=list(config_lib.TRAINING_LOOPS),
         help="custom: our loop, every strategy; fit: Keras Model.fit (off/one_device/mirrored)."),
    flag("continuous_eval_timeout", "integer", None, lower_bound=1,
         help="continuous_eval: stop after this many seconds without a new checkpoint; default: "
              "wait until the run's final step is evaluated."),
)

_DISTRIBUTION_FLAGS = (
    flag("distribution_strategy", "enum", None, enum_values=list(config_lib.STRATEGIES),
         case_sensitive=False,
         help="tf.distribute strategy, any case. Default: mirrored over every visible GPU, or "
              "off (the CPU) when there is none."),
    flag("num_gpus", "integer", None, lower_bound=distribute.ALL_GPUS,
         help="GPUs per worker; -1 or default: every visible GPU (one for off/one_device); 0 "
              "trains on the CPU (mirrored: every logical CPU device)."),
    flag("all_reduce_alg", "enum", None,
         enum_values=sorted({alg for algs in config_lib.ALL_REDUCE_ALGS.values() for alg in algs}),
         help="mirrored: nccl, hierarchical_copy or reduction_to_one_device; "
              "multi_worker_mirrored: ring or nccl. Default: TF's choice."),
    flag("num_packs", "integer", _RUNTIME.num_packs, lower_bound=1,
         help="mirrored with nccl/hierarchical_copy: gradient packs."),
    flag("tpu", "string", _RUNTIME.tpu,
         help="TPU name or grpc:// address ('' or 'local': attached TPU)."),
    flag("worker_hosts", "list", [],
         help="multi_worker_mirrored without TF_CONFIG/Slurm: comma-separated host:port of every "
              "worker."),
    flag("task_index", "integer", _RUNTIME.task_index,
         help="This worker's index in --worker_hosts."),
    flag("heartbeat_timeout", "float", _RUNTIME.heartbeat_timeout_s,
         help="multi_worker_mirrored: seconds without a heartbeat before a worker counts as dead "
              "and all workers stop."),
    flag("enable_xla", "boolean", _RUNTIME.enable_xla, sets=("runtime.enable_xla",),
         help="Compile the model's steps with XLA."),
    flag("loss_scale", "string", None, sets=("runtime.loss_scale",),
         help="fp16: 'dynamic' (default; Keras' LossScaleOptimizer), or a number: a fixed loss "
              "scale, as the official flag. Ignored (logged) without --dtype=fp16."),
    flag("normalize_on_device", "boolean", _TRAIN.normalize_on_device,
         sets=("train.normalize_on_device",),
         help="Custom loop: training batches leave the pipeline as uint8 pixels and the train "
              "step normalizes them on its device (less input CPU, a quarter of the bytes to "
              "copy); --nonormalize_on_device normalizes them in the pipeline."),
)

_EXPORT_FLAGS = (
    flag("export_dir", "string", _EXPORT.export_dir, sets=("export.export_dir",),
         help="export: writes <export_dir>/<N>/, N the next free version; train modes: export "
              "there at the end; predict: the export (or one version) to predict with."),
    flag("export_format", "list", list(_EXPORT.formats), sets=("export.formats",),
         help=f"What to export, from {list(config_lib.EXPORT_FORMATS)}; the SavedModel is "
              "always written. tflite: float and dynamic-range quantized files."),
    flag("export_weights", "enum", _EXPORT.weights, sets=("export.weights",),
         enum_values=list(config_lib.EXPORT_WEIGHTS),
         help="Which weights an export holds: auto: the average when the run keeps one (what it "
              "evaluated), else the trained weights; ema: the average; raw: the trained weights."),
    flag("export_checkpoint", "enum", _EXPORT.checkpoint, sets=("export.checkpoint",),
         enum_values=list(config_lib.EXPORT_CHECKPOINTS),
         help="Which checkpoint an export reads: latest, or best (model_dir/best, "
              "--best_metric)."),
    flag("images", "list", [], help="predict: image files or folders (searched recursively)."),
    flag("top_k", "integer", _EXPORT.top_k, sets=("export.top_k",), lower_bound=1,
         help="export/predict: classes reported per image."),
    flag("output", "enum", "table", enum_values=list(predict.OUTPUT_FORMATS),
         help="predict: output format."),
)

GROUPS = (
    Group("What to run, on what, how long", _RUN_FLAGS),
    Group("Data", _DATA_FLAGS),
    Group("Model", _MODEL_FLAGS),
    Group("Weights to start from, what trains (transfer learning)", _WEIGHTS_FLAGS),
    Group("Optimizer and learning rate", _SCHEDULE_FLAGS),
    Group("Training recipe: loss, augmentation, mixing, weight average, resolution",
          _RECIPE_FLAGS),
    Group("Logs, checkpoints, evaluation", _LOGS_FLAGS),
    Group("Devices, distribution, precision", _DISTRIBUTION_FLAGS),
    Group("Export and prediction", _EXPORT_FLAGS),
    Group("tensorflow/models names (official_flags.py says what each does here)",
          official_flags.FLAGS, in_short_help=False),
)

# The settings ("section.field" of ExperimentConfig) each flag sets. When model_dir holds a
# run, a setting no given flag sets comes from its config.json (run_state.with_saved_run).
FLAG_FIELDS = table.flag_fields(GROUPS)
# Settings never taken from a run: where the command runs and where the run is kept.
COMMAND_FIELDS = ("model.include_top", "model.fused_batch_norm", "train.model_dir",
                  "runtime.distribution_strategy", "runtime.num_gpus", "runtime.all_reduce_alg",
                  "runtime.num_packs", "runtime.worker_hosts", "runtime.task_index",
                  "runtime.heartbeat_timeout_s", "runtime.tpu")
