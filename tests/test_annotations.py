"""Annotation formats: tiny files written here, exact records and labels, located errors."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from aim_video.data.annotations import (
    MAX_UNNAMED_CLASSES,
    NO_LABEL,
    VIDEO_EXTENSIONS,
    AnnotationError,
    Annotations,
    VideoRecord,
    detect_format,
    load_annotations,
    load_class_names,
    save_class_names,
    save_list_file,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- MMAction2 lists


def test_mmaction_video_list_with_spaces_and_root(tmp_path):
    listing = write(tmp_path / "train.txt", "a/x.mp4 3\n\nmy clips/y 1.mp4 0\n/abs/z.mp4 1\n")
    ann = load_annotations(listing, root="/data")
    assert ann.records == [
        VideoRecord("/data/a/x.mp4", 3),
        VideoRecord("/data/my clips/y 1.mp4", 0),
        VideoRecord("/abs/z.mp4", 1),  # absolute paths ignore the root
    ]
    assert ann.class_names == ["0", "1", "2", "3"]
    assert detect_format(listing) == "mmaction"


def test_mmaction_frames_list(tmp_path):
    listing = write(tmp_path / "frames.txt", "clips/a 120 2\nclips/b 64 0\n")
    ann = load_annotations(listing)
    assert detect_format(listing) == "mmaction_frames"
    assert ann.records == [VideoRecord("clips/a", 2, 120), VideoRecord("clips/b", 0, 64)]


def test_class_names_from_file_and_range_check(tmp_path):
    listing = write(tmp_path / "l.txt", "a.mp4 0\nb.mp4 1\nc.mp4 2\n")
    names = write(tmp_path / "names.txt", "run\njump\nswim\n")
    assert load_annotations(listing, class_names=names).class_names == ["run", "jump", "swim"]
    with pytest.raises(AnnotationError, match=r"l\.txt:3: label 2 outside the 2 class names"):
        load_annotations(listing, class_names=["run", "jump"])


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a.mp4 1\nb.mp4\n", 2, "expected 'path label'"),
        ("a.mp4 1\n\nb.mp4 x\n", 3, "label must be an integer, got 'x'"),
        ("a.mp4 -1\n", 1, "label must be >= 0"),
    ],
)
def test_mmaction_malformed_lines_name_file_and_line(tmp_path, text, line, message):
    listing = write(tmp_path / "bad.txt", text)
    with pytest.raises(AnnotationError) as info:
        load_annotations(listing, format="mmaction")
    assert str(info.value).startswith(f"{listing}:{line}: ")
    assert message in str(info.value)
    assert info.value.line == line


def test_frames_list_bad_count(tmp_path):
    listing = write(tmp_path / "f.txt", "a 10 1\nb ten 1\n")
    with pytest.raises(AnnotationError, match=r"f\.txt:2: total_frames must be an integer"):
        load_annotations(listing, format="mmaction_frames")


def test_save_list_round_trip(tmp_path):
    videos = Annotations([VideoRecord("a b/c.mp4", 1), VideoRecord("d.mp4", 0)], ["x", "y"])
    save_list_file(videos, tmp_path / "v.txt")
    assert (tmp_path / "v.txt").read_text() == "a b/c.mp4 1\nd.mp4 0\n"
    assert load_annotations(tmp_path / "v.txt").records == videos.records

    frames = Annotations([VideoRecord("f/a", 2, 30), VideoRecord("f/b", 0, 12)], ["x", "y", "z"])
    save_list_file(frames, tmp_path / "f.txt")
    assert load_annotations(tmp_path / "f.txt").records == frames.records

    save_class_names(["a b", "c"], tmp_path / "names.txt")
    assert load_class_names(tmp_path / "names.txt") == ["a b", "c"]


# ---------------------------------------------------------------- comments and blank lines

# A header a tool might write: without comment handling it reads as "# generated 2024" with
# label 3 (video list) or as a folder of 2024 frames (frame list).
HEADER = "# generated 2024 3\n  # indented too 1\n\n"


def test_comments_and_blank_lines_are_skipped_in_mmaction_lists(tmp_path):
    videos = write(tmp_path / "v.txt", HEADER + "a.mp4 1\n# b.mp4 5\n\nc.mp4 0\n")
    assert detect_format(videos) == "mmaction"
    ann = load_annotations(videos)
    assert ann.records == [VideoRecord("a.mp4", 1), VideoRecord("c.mp4", 0)]
    assert ann.class_names == ["0", "1"]  # label 3 and 5 came from comments only
    frames = write(tmp_path / "f.txt", HEADER + "clips/a 120 2\n#clips/b 64 9\n")
    assert detect_format(frames) == "mmaction_frames"
    assert load_annotations(frames).records == [VideoRecord("clips/a", 2, 120)]
    # Line numbers in errors still count the skipped lines.
    bad = write(tmp_path / "bad.txt", HEADER + "a.mp4 x\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:4: label must be an integer"):
        load_annotations(bad, format="mmaction")


def test_comments_are_skipped_in_class_names_ucf101_and_hmdb51(tmp_path):
    names = write(tmp_path / "names.txt", "# one name a line\nrun\n\n# jump\nswim\n")
    assert load_class_names(names) == ["run", "swim"]
    write(tmp_path / "classInd.txt", "# index name\n1 A\n2 B\n")
    train = write(tmp_path / "trainlist01.txt", HEADER + "B/v_B.avi 2\n")
    test = write(tmp_path / "testlist01.txt", "# test\nA/v_A.avi\n")
    assert [(r.path, r.label) for r in load_annotations(train).records] == [("B/v_B.avi", 1)]
    assert [(r.path, r.label) for r in load_annotations(test).records] == [("A/v_A.avi", 0)]
    splits = tmp_path / "hmdb"
    write(splits / "jump_test_split1.txt", "# name 0|1|2\na.avi 1\n\nb.avi 2\n")
    assert [r.path for r in load_annotations(splits).records] == ["jump/a.avi"]


# ---------------------------------------------------------------- Kinetics


K400_CSV = """label,youtube_id,time_start,time_end,split
"passing American football (in game)",abc,14,24,train
abseiling,def,0,10,train
abseiling,ghi,5,15,train
"""


def test_kinetics_csv_prefers_existing_class_folder(tmp_path):
    csv_file = write(tmp_path / "train.csv", K400_CSV)
    videos = tmp_path / "videos"
    write(videos / "abseiling" / "def_000000_000010.mp4", "x")
    write(videos / "passing_American_football_(in_game)" / "abc_000014_000024.mp4", "x")
    ann = load_annotations(csv_file, root=videos)
    assert detect_format(csv_file) == "kinetics"
    assert ann.class_names == ["abseiling", "passing American football (in game)"]
    assert ann.records == [
        VideoRecord(str(videos / "passing_American_football_(in_game)/abc_000014_000024.mp4"), 1),
        VideoRecord(str(videos / "abseiling/def_000000_000010.mp4"), 0),
        VideoRecord(str(videos / "ghi_000005_000015.mp4"), 0),  # none exists: flat name
    ]


def test_kinetics_700_is_cc_column_and_given_classes(tmp_path):
    csv_file = write(
        tmp_path / "k700.csv",
        "label,youtube_id,time_start,time_end,split,is_cc\nzumba,q,1,11,val,0\n",
    )
    ann = load_annotations(csv_file, class_names=["abseiling", "zumba"])
    assert ann.records == [VideoRecord("q_000001_000011.mp4", 1)]


def test_kinetics_errors(tmp_path):
    no_label = write(tmp_path / "a.csv", "youtube_id,time_start,time_end\nq,1,2\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:1: header lacks column\(s\) \['label'\]"):
        load_annotations(no_label)
    ragged = write(tmp_path / "b.csv", "label,youtube_id,time_start,time_end\nx,q,1\n")
    with pytest.raises(AnnotationError, match=r"b\.csv:2: wrong number of columns"):
        load_annotations(ragged)
    unknown = write(tmp_path / "c.csv", "label,youtube_id,time_start,time_end\nx,q,1,2\ny,r,1,2\n")
    with pytest.raises(AnnotationError, match=r"c\.csv:3: label 'y' not in the class names"):
        load_annotations(unknown, class_names=["x"])


# ---------------------------------------------------------------- Something-Something V2


SSV2_LABELS = {"Pushing something from left to right": "1", "Holding something": "0"}


def test_ssv2_finds_labels_beside_and_strips_brackets(tmp_path):
    write(tmp_path / "something-something-v2-labels.json", json.dumps(SSV2_LABELS))
    split = write(
        tmp_path / "train.json",
        json.dumps(
            [
                {
                    "id": "78687",
                    "label": "holding potato",
                    "template": "Holding [something]",
                    "placeholders": ["potato"],
                },
                {"id": "42", "label": "x", "template": "Pushing [something] from left to right"},
            ]
        ),
    )
    ann = load_annotations(split, root="/ssv2")
    assert detect_format(split) == "ssv2"
    assert ann.class_names == ["Holding something", "Pushing something from left to right"]
    assert ann.records == [VideoRecord("/ssv2/78687.webm", 0), VideoRecord("/ssv2/42.webm", 1)]


def test_ssv2_errors(tmp_path):
    split = write(tmp_path / "val.json", json.dumps([{"id": "1", "template": "Holding [x]"}]))
    with pytest.raises(AnnotationError, match=r"val\.json: no labels file"):
        load_annotations(split)
    labels = write(tmp_path / "labels.json", json.dumps(SSV2_LABELS))
    with pytest.raises(AnnotationError, match=r"val\.json: entry 0: template 'Holding x' not in"):
        load_annotations(split)
    broken = write(tmp_path / "broken.json", '[{"id": "1",\n "template": }]')
    with pytest.raises(AnnotationError, match=r"broken\.json:2: invalid JSON"):
        load_annotations(broken, format="ssv2", class_names=labels)


# ---------------------------------------------------------------- Diving48


def test_diving48_with_and_without_vocab(tmp_path):
    entries = [
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 2, "start_frame": 0, "end_frame": 61},
        {"vid_name": "_8Vy3dlHg2w_00001", "label": 0, "start_frame": 62, "end_frame": 120},
    ]
    split = write(tmp_path / "Diving48_V2_train.json", json.dumps(entries))
    ann = load_annotations(split, root="d48")
    assert detect_format(split) == "diving48"
    assert ann.records == [
        VideoRecord("d48/_8Vy3dlHg2w_00000.mp4", 2),
        VideoRecord("d48/_8Vy3dlHg2w_00001.mp4", 0),
    ]
    assert ann.class_names == ["class_0", "class_1", "class_2"]
    vocab = [
        ["Back", "15som", "05Twis", "FREE"],
        ["Back", "15som", "15Twis", "FREE"],
        ["Back", "15som", "25Twis", "FREE"],
    ]
    write(tmp_path / "Diving48_vocab.json", json.dumps(vocab))
    assert load_annotations(split).class_names[2] == "Back 15som 25Twis FREE"


def test_diving48_bad_entry(tmp_path):
    entries = [{"vid_name": "a", "label": 0}, {"vid_name": "b"}]
    split = write(tmp_path / "d.json", json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"d\.json: entry 1: needs 'vid_name' and 'label'"):
        load_annotations(split, format="diving48")


# ---------------------------------------------------------------- UCF101 / HMDB51


def test_ucf101_train_and_test_lists(tmp_path):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 Archery\n3 HandstandPushups\n")
    train = write(
        tmp_path / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g01_c02.avi 2\n",
    )
    test = write(
        tmp_path / "testlist01.txt",
        "HandstandPushups/v_HandStandPushups_g01_c01.avi\nArchery/v_Archery_g02_c01.avi\n",
    )
    assert detect_format(train) == detect_format(test) == "ucf101"
    ann = load_annotations(train, root="ucf")
    assert ann.class_names == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert [(r.path, r.label) for r in ann.records] == [
        ("ucf/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ("ucf/Archery/v_Archery_g01_c02.avi", 1),
    ]
    assert [r.label for r in load_annotations(test).records] == [2, 1]


def test_ucf101_without_class_file(tmp_path):
    train = write(tmp_path / "trainlist02.txt", "B/v_B_g01_c01.avi 2\nA/v_A_g01_c01.avi 1\n")
    assert load_annotations(train).class_names == ["A", "B"]
    test = write(tmp_path / "testlist02.txt", "A/v_A_g01_c01.avi\n")
    with pytest.raises(AnnotationError, match=r"testlist02\.txt:1: no label and no classInd"):
        load_annotations(test)
    zero = write(tmp_path / "trainlist03.txt", "A/v.avi 0\n")
    with pytest.raises(AnnotationError, match=r"trainlist03\.txt:1: labels count from 1"):
        load_annotations(zero)


def test_hmdb51_split_folder(tmp_path):
    splits = tmp_path / "splits"
    write(splits / "brush_hair_test_split1.txt", "a.avi 1\nb.avi 2\nc.avi 0\n")
    write(splits / "cartwheel_test_split1.txt", "d.avi 2 \ne.avi 1\n")
    write(splits / "cartwheel_test_split2.txt", "d.avi 1\ne.avi 2\n")
    assert detect_format(splits) == "hmdb51"
    train = load_annotations(splits, root="hmdb")
    assert train.class_names == ["brush_hair", "cartwheel"]
    assert [(r.path, r.label) for r in train.records] == [
        ("hmdb/brush_hair/a.avi", 0),
        ("hmdb/cartwheel/e.avi", 1),
    ]
    test = load_annotations(splits, subset="test")
    assert [r.path for r in test.records] == ["brush_hair/b.avi", "cartwheel/d.avi"]
    one_file = load_annotations(splits / "cartwheel_test_split2.txt", subset="test")
    assert [r.path for r in one_file.records] == ["cartwheel/e.avi"]
    write(splits / "cartwheel_test_split3.txt", "d.avi train\n")
    with pytest.raises(AnnotationError, match=r"cartwheel_test_split3\.txt:1: expected"):
        load_annotations(splits, split=3)


# ---------------------------------------------------------------- class-per-folder tree


def test_folder_tree(tmp_path):
    for name in ("walk/a.mp4", "walk/sub/b.MKV", "run/c.avi", "run/notes.txt", "empty/.keep"):
        write(tmp_path / name, "x")
    ann = load_annotations(tmp_path)
    assert detect_format(tmp_path) == "folder"
    assert ann.class_names == ["empty", "run", "walk"]
    assert [(Path(r.path).relative_to(tmp_path).as_posix(), r.label) for r in ann.records] == [
        ("run/c.avi", 1),
        ("walk/a.mp4", 2),
        ("walk/sub/b.MKV", 2),
    ]


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        load_annotations(tmp_path / "nope.txt")
    listing = write(tmp_path / "a.txt", "a.mp4 0\n")
    with pytest.raises(ValueError, match="unknown annotation format 'csv'"):
        load_annotations(listing, format="csv")  # type: ignore[arg-type]


# ---------------------------------------------------------------- hostile lists


@pytest.mark.parametrize(
    "label", ["99999999999999999999999", "1000000000", str(MAX_UNNAMED_CLASSES)]
)
def test_a_huge_label_without_class_names_is_one_line_not_all_memory(tmp_path, label):
    # The old reader made one name per number up to the largest label: 10**23 names.
    listing = write(tmp_path / "l.txt", f"good.mp4 0\nbad.mp4 {label}\n")
    with pytest.raises(AnnotationError) as info:
        load_annotations(listing)
    assert str(info.value).startswith(f"{listing}:2: label {label} without class names")
    assert f"0 .. {MAX_UNNAMED_CLASSES - 1}" in str(info.value)


def test_the_largest_unnamed_label_still_names_its_classes(tmp_path):
    listing = write(tmp_path / "l.txt", f"a.mp4 {MAX_UNNAMED_CLASSES - 1}\n")
    names = load_annotations(listing).class_names
    assert len(names) == MAX_UNNAMED_CLASSES and names[-1] == str(MAX_UNNAMED_CLASSES - 1)


def test_a_huge_label_in_the_other_formats_without_names(tmp_path):
    diving = write(tmp_path / "d" / "v.json", json.dumps([{"vid_name": "a", "label": 10**23}]))
    with pytest.raises(AnnotationError, match=r"v\.json: entry 0: label 10{23} without class"):
        load_annotations(diving)
    ucf = write(tmp_path / "u" / "trainlist01.txt", "Run/v_Run_g01_c01.avi 99999999999\n")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt:1: label 99999999998 without"):
        load_annotations(ucf)


@pytest.mark.parametrize("label", ["1e9", "1_000", "+5", "\u0663", "2.0"])
def test_labels_are_plain_ascii_integers(tmp_path, label):
    # int() would take "1_000", "+5" and the Arabic-Indic digit three.
    listing = write(tmp_path / "l.txt", f"a.mp4 {label}\n")
    message = f"l.txt:1: label must be an integer, got '{label}'"
    with pytest.raises(AnnotationError, match=re.escape(message)):
        load_annotations(listing, format="mmaction")


def _load_in_thread(*args, **kwargs):
    """load_annotations in a thread, so a reader that blocks fails the test instead of hanging
    it: a thread blocked in open() cannot be stopped, so it is left as a daemon."""
    result = {}

    def target():
        try:
            result["value"] = load_annotations(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "load_annotations blocked on a FIFO"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("format", ["auto", "mmaction", "kinetics", "ssv2", "ucf101"])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, format):
    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    with pytest.raises(AnnotationError, match=r"list\.txt: not a regular file \(a FIFO"):
        _load_in_thread(fifo, format, labels=format != "ssv2")
    listing = write(tmp_path / "l.txt", "a.mp4 0\n")
    with pytest.raises(AnnotationError, match=r"list\.txt: not a regular file"):
        _load_in_thread(listing, class_names=fifo)
    with pytest.raises(AnnotationError, match=r"list\.txt: not a regular file"):
        detect_format(fifo)


def test_a_folder_given_as_a_list_file(tmp_path):
    with pytest.raises(AnnotationError, match="a folder where an annotation file was expected"):
        load_annotations(tmp_path, format="mmaction")


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_bytes("\ufeffa.mp4 1\nb.mp4 0\n".encode())
    assert [r.path for r in load_annotations(listing).records] == ["a.mp4", "b.mp4"]
    names = tmp_path / "names.json"
    names.write_bytes('\ufeff["run", "jump"]'.encode())
    assert load_annotations(listing, class_names=names).class_names == ["run", "jump"]
    csv_file = tmp_path / "k.csv"
    csv_file.write_bytes("\ufefflabel,youtube_id,time_start,time_end,split\nrun,x,0,10,train\n"
                         .encode())
    assert load_annotations(csv_file).class_names == ["run"]


@pytest.mark.parametrize("name", ["l.txt", "k.csv", "s.json"])
def test_a_list_that_is_not_utf8_is_one_line(tmp_path, name):
    listing = tmp_path / name
    listing.write_bytes(b"caf\xe9.mp4 0\n")  # Latin-1
    with pytest.raises(AnnotationError, match=rf"{name}: not UTF-8 text \(byte 3: "):
        load_annotations(listing)


@pytest.mark.parametrize("text", ["", "\n\n", "# only\n# comments\n"])
@pytest.mark.parametrize("labels", [True, False])
def test_a_list_of_no_video_is_an_error(tmp_path, text, labels):
    listing = write(tmp_path / "empty.txt", text)
    with pytest.raises(AnnotationError, match=r"empty\.txt: lists no video"):
        load_annotations(listing, labels=labels)


def test_an_hmdb51_subset_with_no_video_is_an_error(tmp_path):
    write(tmp_path / "run_test_split1.txt", "a.avi 1\n")
    with pytest.raises(AnnotationError, match="lists no video"):
        load_annotations(tmp_path, subset="test")


def test_plain_lists_are_read_when_labels_do_not_matter(tmp_path):
    listing = write(tmp_path / "l.txt", "a.mp4\nmy clip.mp4\nb.mp4 3\nc.mp4 99999999999999\n"
                                        "clip 2.mp4\n")
    with pytest.raises(AnnotationError, match=r"l\.txt:1: expected 'path label'"):
        load_annotations(listing)
    ann = load_annotations(listing, root="/v", labels=False)
    assert ann.class_names == []
    assert ann.records == [VideoRecord(f"/v/{p}", NO_LABEL) for p in
                           ["a.mp4", "my clip.mp4", "b.mp4", "c.mp4", "clip 2.mp4"]]
    frames = write(tmp_path / "f.txt", "clips/a 120 2\n")
    assert load_annotations(frames, labels=False).records == [VideoRecord("clips/a", NO_LABEL, 120)]
    ucf = write(tmp_path / "u" / "testlist01.txt", "Run/v_Run_g01_c01.avi\n")  # no classInd.txt
    assert load_annotations(ucf, labels=False).records == [
        VideoRecord("Run/v_Run_g01_c01.avi", NO_LABEL)]


def test_labelled_lists_read_without_labels_drop_them(tmp_path):
    listing = write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"
                                        "run,x,0,10,train\n")
    ann = load_annotations(listing, labels=False)
    assert ann.records == [VideoRecord("x_000000_000010.mp4", NO_LABEL)] and ann.class_names == []


@pytest.mark.parametrize("suffix", [".ts", ".mts", ".m2ts"])
def test_transport_streams_are_videos(suffix):
    assert suffix in VIDEO_EXTENSIONS


def test_only_newlines_end_lines(tmp_path):
    # U+2028, U+0085 and a form feed are characters of the name, not line breaks.
    names = ["a\u2028b.mp4", "c\x85d.mp4", "e\x0cf.mp4"]
    listing = write(tmp_path / "l.txt", "".join(f"{n} {i}\r\n" for i, n in enumerate(names)))
    assert [(r.path, r.label) for r in load_annotations(listing).records] == [
        (n, i) for i, n in enumerate(names)]
    bad = write(tmp_path / "bad.txt", "a\u2028b.mp4 0\nc.mp4 x\n")
    with pytest.raises(AnnotationError, match=r"bad\.txt:2: label must be an integer"):
        load_annotations(bad)
