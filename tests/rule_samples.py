"""Rule lists shaped as the systems operators export them from (shared by the format,
store, CLI and API tests)."""

from __future__ import annotations

# As Mastodon's admin export writes it (Admin → Federation → Export), with a comment that
# holds commas and quotes, one spanning two lines, and the values Mastodon uses.
MASTODON_BLOCKS = """\
#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate
spam.example,suspend,false,false,"Spam, scams, and ""free"" crypto",false
loud.example,silence,true,true,Harassment,false
media.example,noop,true,false,,false
multi.example,suspend,false,false,"first line
second line",true
münchen.example,suspend,false,false,,false
"""

MASTODON_ALLOWS = "#domain\nfriend.example\nMÜNCHEN.de\n"

GOTOSOCIAL_JSON = """[
  {"domain": "bumfaces.net", "suspended_at": "2020-05-13T13:29:12.000Z",
   "public_comment": "big jerks", "obfuscate": false},
  {"domain": "peepee.poopoo", "public_comment": "harassment, daily", "obfuscate": true},
  {"domain": "nothanks.com"}
]"""

GOTOSOCIAL_CSV = """#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate
bumfaces.net,suspend,false,false,big jerks,false
peepee.poopoo,suspend,false,false,harassment,false
nothanks.com,suspend,false,false,,false
"""
