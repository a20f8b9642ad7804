"""tf.data input pipeline of the official ResNet recipe: sources, preprocessing, build_dataset."""
from input_pipeline.config import DataConfig
from input_pipeline.pipeline import DatasetInfo
from input_pipeline.pipeline import build_dataset
from input_pipeline.pipeline import dataset_info
from input_pipeline.pipeline import per_replica_batch_size
from input_pipeline.pipeline import read_records

__all__ = ["DataConfig", "DatasetInfo", "build_dataset", "dataset_info", "per_replica_batch_size",
           "read_records"]
