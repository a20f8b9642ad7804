"""official_resnet: the TF official-models ResNet recipe on Keras 3, plus transfer learning."""
from setuptools import setup

HUB = ["huggingface_hub==2.4.0"]

setup(
    name="official_resnet",
    version="0.1.0",
    description="ResNet/VGG image classification on Keras 3 and tf.distribute, "
    "with the official ImageNet recipe and transfer-learning workflows.",
    python_requires=">=3.11",
    # The tools under benchmarks/ run from a checkout (python -m benchmarks.x) and are not installed.
    packages=["official_resnet", "official_resnet.models", "official_resnet.demo", "input_pipeline"],
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        "absl-py==2.5.1",
        "h5py>=3.10",
        "numpy>=1.26",
        "pillow>=10.1",  # ImageFont.load_default(size=...)
        # .safetensors weights (timm, the Hugging Face hub), read through its numpy API.
        "safetensors==0.8.0",
        # TF 2.21 installs without it; the runs' summaries need it to be seen.
        "tensorboard==2.21.0",
    ],
    extras_require={
        # hf://ORG/REPO weight names: the hub client and its cache.
        "hub": HUB,
        # torch's CPU wheel, torchvision and timm are the references of the weight-import
        # parity tests; loading weights never needs them. pytest-xdist runs the suite on
        # every core (./run.sh test).
        "test": ["pytest==8.4.2", "pytest-xdist==3.8.0", "psutil>=5.9", "torch==2.13.0",
                 "torchvision==0.28.0", "timm==1.0.31", *HUB],
    },
)
