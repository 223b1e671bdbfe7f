"""The comparison across segmentation variants (the report stage), in parts:

- `scores`: the evaluate stages' files read into tables (one row per variant), gap closed;
- `tables`: those tables as Markdown lines, pure functions;
- `published`: the published results on the real datasets, with their citations;
- `figures`: the matplotlib figures;
- `rows`: which rows the comparison lists and the notes that set some apart;
- `pages`: the pages that embed the tables (reports/comparison.md, README's results block);
- `write`: what the report stage writes and logs.
"""
