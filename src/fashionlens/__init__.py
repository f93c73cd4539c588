"""fashionlens: what is this garment, and where have we seen it?"""

from fashionlens.data.readers import read
from fashionlens.data.samples import DatasetInfo, Sample, SampleSet

__version__ = "0.1.0"
__all__ = ["DatasetInfo", "Sample", "SampleSet", "__version__", "read"]
