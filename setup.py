from setuptools import find_packages, setup

setup(
    name="great_tf",
    version="0.1.0",
    description="Gradient Adversarial Training (GREAT; Sinha et al., 2018) in TensorFlow 2 and Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Only the library goes into site-packages; trainers/, tuning/ and bench/ run from the repository
    # root (python -m trainers.mtl ...), where Python finds them without an install.
    packages=find_packages(include=["great_tf", "great_tf.*"]),
    install_requires=[
        "tensorflow>=2.16,<2.23",
        "keras>=3.3,<4",
        "tensorflow-datasets>=4.9",
        "keras-tuner>=1.4",
        "tensorboard>=2.16",
        "scikit-image>=0.22",
        "matplotlib>=3.7",
        "numpy>=1.26",
        "scipy>=1.10",  # CAGrad's dual and Nash-MTL's bargaining solve
    ],
    extras_require={"test": ["pytest>=7"], "crosscheck": ["adversarial-robustness-toolbox>=1.17"]},
)
