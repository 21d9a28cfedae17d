"""The pieces of the `fetch_url` tool, one job per module.

- `policy`: which URLs and addresses may be fetched, and the refusal error.
- `fetcher`: the `Fetcher` that resolves, checks, connects to the checked address, follows
  redirects and reads a bounded body.
- `content`: undoing Content-Encoding within a bound, and telling text from binary bodies.
- `html_text`: HTML to readable text.

The tool itself, and the import path callers use, is `tools.fetch_url`.
"""
