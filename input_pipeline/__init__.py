"""tf.data input pipeline of the official ResNet recipe: sources, preprocessing, build_dataset."""
from input_pipeline.config import DataConfig
from input_pipeline.pipeline import DatasetInfo
from input_pipeline.pipeline import build_dataset
from input_pipeline.pipeline import build_train_stream
from input_pipeline.pipeline import dataset_info
from input_pipeline.pipeline import per_replica_batch_size

__all__ = ["DataConfig", "DatasetInfo", "build_dataset", "build_train_stream", "dataset_info",
           "per_replica_batch_size"]
