"""Where a video's blobs live. One place, so delivery, processing and cleanup agree."""


def source_key(video_id: str) -> str:
    return f"videos/{video_id}/source"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def video_prefix(video_id: str) -> str:
    return f"videos/{video_id}/"


def hls_key(video_id: str, name: str) -> str:
    return f"videos/{video_id}/hls/{name}"


def artifact_key(video_id: str, name: str) -> str:
    return f"videos/{video_id}/{name}"


def sound_key(sound_id: str) -> str:
    return f"sounds/{sound_id}.m4a"


def video_id_from_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "videos":
        return parts[1]
    return None
