"""official_resnet: the TF official-models ResNet recipe on Keras 3, plus transfer learning."""
from setuptools import setup

setup(
    name="official_resnet",
    version="0.1.0",
    description="ResNet/VGG image classification on Keras 3 and tf.distribute, "
    "with the official ImageNet recipe and transfer-learning workflows.",
    python_requires=">=3.11",
    packages=["official_resnet", "input_pipeline"],
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        "absl-py==2.5.1",
        "h5py>=3.10",
        "numpy>=1.26",
        "pillow>=10.1",  # ImageFont.load_default(size=...)
    ],
    extras_require={"test": ["pytest==8.4.2", "psutil>=5.9"]},
)
