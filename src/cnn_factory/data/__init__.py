"""From the CSV to arrays the network reads: table checks, decoding, row cache, prepare, dataset, augmentation."""
