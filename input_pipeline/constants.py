"""The official recipe's numbers, said once. Flags, docs and tests read them from here."""

# ImageNet-2012 as the official TFRecords hold it.
IMAGENET_NUM_TRAIN_IMAGES = 1_281_167
IMAGENET_NUM_EVAL_IMAGES = 50_000
IMAGENET_TRAIN_PATTERN = "train-*-of-01024"
IMAGENET_EVAL_PATTERN = "validation-*-of-00128"
IMAGENET_NUM_TRAIN_SHARDS = 1024
IMAGENET_NUM_EVAL_SHARDS = 128

# Label convention. The records store labels 1..1000 (0 was "background").
# We read them with LABEL_OFFSET subtracted into 0..999 and build 1000-way
# models, as keras.applications does, so imported weights line up.
# `num_classes=1001, label_offset=0` reproduces the original official layout.
IMAGENET_NUM_CLASSES = 1000
IMAGENET_LABEL_OFFSET = 1

# Image sizes: train crops are resized to DEFAULT_IMAGE_SIZE; eval resizes the
# shorter side to DEFAULT_IMAGE_SIZE / EVAL_CROP_FRACTION (256 at 224) and
# crops the centre.
DEFAULT_IMAGE_SIZE = 224
EVAL_CROP_FRACTION = 0.875
# How eval resizes the shorter side: "bilinear" is the official recipe's kernel (TF1,
# no half-pixel centres, no antialiasing); the antialiased ones are what torchvision
# (bilinear) and timm (bicubic, on PIL images) published their accuracies with.
EVAL_RESIZE_METHODS = ("bilinear", "bilinear_antialias", "bicubic_antialias")
MIN_IMAGE_SIZE = 32

# sample_distorted_bounding_box parameters of the official train crop.
CROP_MIN_OBJECT_COVERED = 0.1
CROP_ASPECT_RATIO_RANGE = (0.75, 1.33)
CROP_AREA_RANGE = (0.05, 1.0)
CROP_MAX_ATTEMPTS = 100

# Normalization conventions; each pretrained weight set expects one of them.
RGB_MEANS = (123.68, 116.78, 103.94)  # official recipe: subtract, no scaling
CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)  # keras.applications ResNet/VGG: RGB->BGR, subtract
TORCH_MEANS = (0.485, 0.456, 0.406)  # torchvision: x/255, then (x - mean) / std
TORCH_STDS = (0.229, 0.224, 0.225)
NORMALIZATION_MODES = ("rgb_mean", "caffe", "torch", "unit")
DEFAULT_NORMALIZATION = "rgb_mean"

# Class names, one a line, line i = class i: beside TFRecord shards (build_tfrecords) and
# in an export's assets.
LABELS_FILE = "labels.txt"

# Official TFRecord feature keys.
KEY_ENCODED = "image/encoded"
KEY_LABEL = "image/class/label"
KEY_LABEL_TEXT = "image/class/text"
KEY_HEIGHT = "image/height"
KEY_WIDTH = "image/width"
KEY_BBOX_XMIN = "image/object/bbox/xmin"
KEY_BBOX_YMIN = "image/object/bbox/ymin"
KEY_BBOX_XMAX = "image/object/bbox/xmax"
KEY_BBOX_YMAX = "image/object/bbox/ymax"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
