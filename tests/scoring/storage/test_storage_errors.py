"""A store's failure in one line, with the fix that fits it: the advice follows what went wrong, not digits that
happen to sit in a key's hash."""

from __future__ import annotations

import pytest

from stages.scoring.storage.locations import locate, storage_error

UNREACHABLE = (
    "When initiating multiple part upload for key 'out/.score-store/df3dd017403d43b0ce6/.1e68.arrow.tmp' in bucket "
    "'scoring': AWS Error NETWORK_CONNECTION during CreateMultipartUpload operation: curlCode: 7, Could not connect to "
    "server"
)


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        (UNREACHABLE, "check that the store is reachable"),
        ("AWS Error ACCESS_DENIED during PutObject operation: Access Denied", "check the credentials"),
        ("HTTP status 403 Forbidden", "check the credentials"),
        ("AWS Error NO_SUCH_BUCKET during HeadBucket operation", "check the bucket name"),
        ("key 'out/a404b.arrow': disk quota exceeded", "check the path and its permissions"),
    ],
)
def test_the_hint_follows_the_failure(reason, hint):
    message = str(storage_error(locate("out/p.parquet"), OSError(reason), writing=True))
    assert message.startswith(f"cannot write out/p.parquet: {reason.splitlines()[0]}; {hint}"), message
