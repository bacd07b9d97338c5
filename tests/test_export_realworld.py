"""Export of the ABC musicians really write: tempo spellings, decorations, bar rests, third
endings, additive meters, untitled tunes, out-of-range notes, inline unit lengths, repeats
reopened. Every fixture is written here; the MIDI is read back with mido, the MusicXML with
music21.
"""

import re
from fractions import Fraction
from pathlib import Path

import mido
import pytest

from abcgen.export import export_tunes, prepare_abc

HEADER = "X:{number}\nT:{title}\nM:{meter}\nL:{unit}\n{extra}K:G\n"
G4, A4, B4, C5, D5 = 67, 69, 71, 72, 74


def tune(body: str, meter="4/4", unit="1/8", extra="", number=1, title="Fixture") -> str:
    return HEADER.format(number=number, title=title, meter=meter, unit=unit, extra=extra) + body + "\n"


def exported(tmp_path, abc: str, formats=("midi", "musicxml")):
    report = export_tunes(abc, tmp_path, list(formats))
    assert report.ok, [str(failure) for failure in report.failed]
    return {path.suffix: path for path in report.written}


def played(path) -> list[tuple[Fraction, int, Fraction]]:
    """(start, MIDI pitch, length) in quarter notes of the melody track."""
    midi = mido.MidiFile(path)
    now, sounding, notes = 0, {}, []
    for message in midi.tracks[1]:
        now += message.time
        if message.type == "note_on" and message.velocity:
            sounding[message.note] = now
        elif message.type in ("note_on", "note_off") and message.note in sounding:
            start = sounding.pop(message.note)
            notes.append(
                (Fraction(start, midi.ticks_per_beat), message.note, Fraction(now - start, midi.ticks_per_beat))
            )
    return sorted(notes)


def pitches(path) -> list[int]:
    return [pitch for _, pitch, _ in played(path)]


def tempo(path) -> float:
    tempos = [m.tempo for track in mido.MidiFile(path).tracks for m in track if m.type == "set_tempo"]
    return mido.tempo2bpm(tempos[0])


def musicxml(path):
    from music21 import converter

    return converter.parse(path)


# ---- tempo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q, bpm",
    [
        ("Q: 1/4 = 120", 120),
        ("Q:1/4=100", 100),
        ('Q:"Allegro" 1/4 = 132', 132),
        ("Q:3/8=60", 90),
        ("Q:1/8 1/4=40", 60),
        ("Q:200", 100),
        ("Q: C=160", 80),
    ],
)
def test_tempo_spellings_export_with_their_tempo(tmp_path, q, bpm):
    files = exported(tmp_path, tune("GABc d4|]", extra=q + "\n"))
    assert pitches(files[".mid"]) == [G4, A4, B4, C5, D5]
    assert tempo(files[".mid"]) == pytest.approx(bpm, abs=0.01)  # quarter notes per minute


def test_an_unreadable_tempo_is_left_out_with_a_warning_and_the_default_kept(tmp_path):
    report = export_tunes(tune("GABc d4|]", extra="Q:fast\n"), tmp_path, ["midi"])
    assert report.ok and report.warnings == ["X:1 (Fixture): left out the tempo Q:fast, which music21 cannot read"]
    assert tempo(report.written[0]) == pytest.approx(110, abs=0.01)


# ---- decorations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decorated", ["HB", "+fermata+B", "!fermata!B", "+trill+B", "!trill!B", "~B", ".B", "TB", "uB", "+>+B", "!D.C.!B"]
)
def test_decorations_keep_their_note_and_add_none(tmp_path, decorated):
    files = exported(tmp_path, tune(f"GA {decorated}c d4|]"))
    assert played(files[".mid"]) == [
        (0, G4, Fraction(1, 2)),
        (Fraction(1, 2), A4, Fraction(1, 2)),
        (1, B4, Fraction(1, 2)),
        (Fraction(3, 2), C5, Fraction(1, 2)),
        (2, D5, 2),
    ]
    notes = [n.pitch.midi for n in musicxml(files[".musicxml"]).recurse().notes]
    assert notes == [G4, A4, B4, C5, D5]


# ---- rests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "meter, unit, rest, quarters",
    [
        ("4/4", "1/8", "Z4", 16),
        ("4/4", "1/8", "Z", 4),
        ("6/8", "1/8", "Z2", 6),
        ("3/4", "1/4", "Z3", 9),
        ("C|", "1/8", "Z2", 8),
    ],
)
def test_multi_bar_rests_keep_their_bars(tmp_path, meter, unit, rest, quarters):
    bar = {"4/4": 4, "6/8": 3, "3/4": 3, "C|": 4}[meter]
    length = {"1/8": 2, "1/4": 1}[unit] * bar  # one bar of G, in units
    files = exported(tmp_path, tune(f"G{length}|{rest}|G{length}|]", meter=meter, unit=unit))
    assert [start for start, _, _ in played(files[".mid"])] == [0, bar + quarters]
    from music21 import stream

    measures = musicxml(files[".musicxml"]).parts[0].getElementsByClass(stream.Measure)
    assert len(measures) == 2 + quarters // bar


def test_invisible_rests_keep_their_length(tmp_path):
    files = exported(tmp_path, tune("x2 GA B4|x/ G/ A3 B4|]"))
    assert played(files[".mid"]) == [
        (1, G4, Fraction(1, 2)),
        (Fraction(3, 2), A4, Fraction(1, 2)),
        (2, B4, 2),
        (Fraction(17, 4), G4, Fraction(1, 4)),
        (Fraction(9, 2), A4, Fraction(3, 2)),
        (6, B4, 2),
    ]


def test_a_bar_rest_under_a_free_meter_is_refused_in_one_line(tmp_path):
    report = export_tunes(tune("GABc|Z2|d4|]", meter="none"), tmp_path, ["midi"])
    assert [str(f) for f in report.failed] == ["X:1 (Fixture): a bar rest Z2 needs a meter (M:) to know its length"]


# ---- endings and repeats --------------------------------------------------------------------


THREE_ENDINGS = "|:GABc d4|[1 c8:|[2 B8:|[3 A8|]"


def test_a_third_ending_is_played_third_and_not_as_a_chord(tmp_path):
    files = exported(tmp_path, tune(THREE_ENDINGS))
    common = [G4, A4, B4, C5, D5]
    assert pitches(files[".mid"]) == common + [C5] + common + [B4] + common + [A4]
    assert [start for start, _, _ in played(files[".mid"])][-1] == 20  # one note at a time
    text = files[".musicxml"].read_text()
    assert [re.findall(r'<ending [^>]*number="(\d)"', text).count(n) for n in "123"] == [2, 2, 2]
    assert "<chord" not in text


@pytest.mark.parametrize(
    "endings",
    ["|:GABc d4|[1 c8:|[2 B8:|[3 A8:|[4 G8|]", "|:GABc d4|[1,3 c8:|[2 B8:|[4 G8|]", "|:GABc d4|1 c8:|2 B8:|3 A8|]"],
)
def test_more_endings_export_every_note_once_per_pass_or_as_written(tmp_path, endings):
    files = exported(tmp_path, tune(endings))
    notes = pitches(files[".mid"])
    assert notes[:6] == [G4, A4, B4, C5, D5, C5] and notes[-1] in (G4, A4)
    assert len(set(start for start, _, _ in played(files[".mid"]))) == len(notes)  # no chords


def test_a_repeat_reopened_before_it_closes_plays_from_the_later_start(tmp_path):
    files = exported(tmp_path, tune("|:GABc d2B2|:c2A2 [1B4:| [2G4||"))
    assert pitches(files[".mid"]) == [G4, A4, B4, C5, D5, B4, C5, A4, B4, C5, A4, G4]


# ---- meters and unit lengths ----------------------------------------------------------------


@pytest.mark.parametrize("meter", ["(2+3)/8", "3/8+2/8", "2+3/8", "5/8"])
def test_additive_meters_are_five_eighths(tmp_path, meter):
    from music21 import meter as m21meter, stream

    files = exported(tmp_path, tune("GABcd|dcBAG|]", meter=meter))
    score = musicxml(files[".musicxml"])
    signature = score.recurse().getElementsByClass(m21meter.TimeSignature).first()
    assert signature.barDuration.quarterLength == 2.5
    assert len(score.parts[0].getElementsByClass(stream.Measure)) == 2
    assert [start for start, _, _ in played(files[".mid"])][5] == Fraction(5, 2)


def test_inline_unit_length_is_folded_in(tmp_path):
    files = exported(tmp_path, tune("GA Bc|[L:1/8]GABc d4|[L:1/4] G4|]", unit="1/4"))
    assert [length for _, _, length in played(files[".mid"])] == [1] * 4 + [Fraction(1, 2)] * 4 + [2, 4]


# ---- names and refusals ---------------------------------------------------------------------


def test_thirty_untitled_tunes_get_distinct_safe_names(tmp_path):
    text = "\n".join(f"X:1\nM:4/4\nL:1/8\nK:G\nGABc d{n % 7 + 1}|]\n" for n in range(30))
    text += "\nX:1\nT:Untitled B\nM:4/4\nL:1/8\nK:G\nGABc|]\n"
    report = export_tunes(text, tmp_path, ["midi"])
    names = [path.name for path in report.written]
    assert len(set(names)) == 31 and all(re.fullmatch(r"[a-z0-9-]+\.mid", name) for name in names)
    # "001-untitled-b" belongs to the tune called Untitled B
    assert names[:3] == ["001-untitled.mid", "001-untitled-c.mid", "001-untitled-d.mid"]
    assert names[-2:] == ["001-untitled-ae.mid", "001-untitled-b.mid"]


@pytest.mark.parametrize("note", ["C,,,,,,,,", "B,,,,,", "a''''", "c'''''"])
def test_notes_beyond_midi_are_refused_naming_the_tune(tmp_path, note):
    abc = tune(f"G4 {note}4|]", title="Too Far") + "\n" + tune("GABc d4|]", number=2, title="Fine")
    report = export_tunes(abc, tmp_path, ["midi"])
    assert len(report.failed) == 1
    assert str(report.failed[0]).startswith(f"X:1 (Too Far): the note {note} ")
    assert "range of MIDI" in str(report.failed[0])
    assert [path.name for path in report.written] == ["002-fine.mid"]


@pytest.mark.parametrize("body, key", [("G2 ^g''''2 G4|]", "C"), ("G2 g''''2 G4|]", "C#")])
def test_a_sharp_that_takes_a_note_beyond_midi_is_refused(tmp_path, body, key):
    abc = f"X:1\nT:Too High\nM:4/4\nL:1/8\nK:{key}\n{body}\n"
    report = export_tunes(abc, tmp_path, ["midi"])
    assert [str(failure) for failure in report.failed] == [
        "X:1 (Too High): the note G#9 is beyond the range of MIDI (C-1 to G9); write it an octave nearer"
    ]


def test_the_lowest_and_highest_midi_notes_are_kept(tmp_path):
    files = exported(tmp_path, tune("C,,,,4 g''''4|]"), ["midi"])
    assert pitches(files[".mid"]) == [12, 127]


def test_prepare_abc_leaves_decoration_names_and_chord_symbols_alone():
    text, _ = prepare_abc('X:1\nT:t\nK:G\n"Gx"G !Hx!A "^Zone"B x c|\n')
    assert '"Gx"G' not in text or "Gx" in text
    assert "!Hx!A" in text and "z c" in text and '"^Zone"' not in text


# ---- several voices, encodings, meters too long ---------------------------------------------


VOICES_IN_HEADER = (
    'X:1\nT:Duet\nM:4/4\nL:1/8\nV:1 name="Tune"\nV:2 clef=bass\nK:G\n'
    "V:1\nGABc d4|\nV:2\nG,8|\nV:1\nd2B2 G4|]\nV:2\nD,8|]\n"
)
INLINE_VOICES = "X:1\nT:Duet\nM:4/4\nL:1/8\nK:G\n[V:1] GABc d4|[V:2] G,8|\n[V:1] d2B2 G4|]\n[V:2] D,8|]\n"


@pytest.mark.parametrize("abc", [VOICES_IN_HEADER, INLINE_VOICES])
def test_a_multi_voice_tune_exports_its_first_voice_with_a_warning(tmp_path, abc):
    report = export_tunes(abc, tmp_path, ["midi", "musicxml"])
    assert report.ok and report.warnings == [
        "X:1 (Duet): exported its first voice (V:1) only, without the other voice: music21 cannot read several voices"
    ]
    files = {path.suffix: path for path in report.written}
    assert played(files[".mid"]) == [
        (0, G4, Fraction(1, 2)),
        (Fraction(1, 2), A4, Fraction(1, 2)),
        (1, B4, Fraction(1, 2)),
        (Fraction(3, 2), C5, Fraction(1, 2)),
        (2, D5, 2),
        (4, D5, 1),
        (5, B4, 1),
        (6, G4, 2),
    ]
    assert len(mido.MidiFile(files[".mid"]).tracks) == 2
    score = musicxml(files[".musicxml"])
    assert len(score.parts) == 1 and len(score.parts[0].recurse().notes) == 8


@pytest.mark.parametrize(
    "encoded",
    [
        "latin-1",
        "utf-8-sig",
        "utf-16",
        "utf-8",
    ],
)
def test_bytes_in_any_encoding_the_corpus_reads_keep_their_title(tmp_path, encoded):
    data = tune("GABc d4|]", title="Café au lait").encode(encoded)
    report = export_tunes(data, tmp_path, ["musicxml"])
    assert [path.name for path in report.written] == ["001-cafe-au-lait.musicxml"]
    assert "<work-title>Café au lait</work-title>" in report.written[0].read_text(encoding="utf-8")


def test_text_that_starts_with_a_byte_order_mark_is_read(tmp_path):
    report = export_tunes("\ufeff" + tune("GABc d4|]", title="Marked"), tmp_path, ["midi"])
    assert [path.name for path in report.written] == ["001-marked.mid"]


@pytest.mark.parametrize("meter, inline", [("2000/8", False), ("99999999/4", True), ("4/1024", False)])
def test_a_meter_music21_cannot_set_up_in_time_is_refused_in_one_line(tmp_path, meter, inline):
    abc = tune(f"GABc [M:{meter}] d4|]") if inline else tune("GABc d4|]", meter=meter)
    abc += "\n" + tune("GABc d4|]", number=2, title="Fine")
    report = export_tunes(abc, tmp_path, ["midi"])
    assert [str(failure) for failure in report.failed] == [
        f"X:1 (Fixture): M:{meter} is beyond the meters abcgen exports (numbers up to 64): "
        "music21 takes minutes to set up so long a bar"
    ]
    assert [path.name for path in report.written] == ["002-fine.mid"]


def test_the_longest_meter_exported_is_read(tmp_path):
    files = exported(tmp_path, tune("G64|]", meter="64/8", unit="1/8"), ["midi"])
    assert played(files[".mid"]) == [(0, G4, 32)]


# ---- the MIDI file (written with mido) ------------------------------------------------------


def absolute(track) -> list[tuple[int, dict]]:
    """(tick, message attributes without time) of every message of a track."""
    now, messages = 0, []
    for message in track:
        now += message.time
        attributes = message.dict()
        attributes.pop("time")
        messages.append((now, attributes))
    return messages


def test_the_midi_file_has_a_tempo_track_a_melody_track_and_a_chord_track(tmp_path):
    abc = tune('"G"GABc "D"d4|[K:D][M:3/4] "A"A2 F2 D2|]', extra="Q:1/4=96\n")
    report = export_tunes(abc, tmp_path, ["midi"], chords=True)
    midi = mido.MidiFile(report.written[0])
    assert (midi.type, midi.ticks_per_beat, len(midi.tracks)) == (1, 10080, 3)
    bar = 4 * 10080
    assert absolute(midi.tracks[0]) == [
        (0, {"type": "set_tempo", "tempo": 625_000}),  # 60,000,000 microseconds / 96
        (0, {"type": "key_signature", "key": "G"}),
        (
            0,
            {
                "type": "time_signature",
                "numerator": 4,
                "denominator": 4,
                "clocks_per_click": 24,
                "notated_32nd_notes_per_beat": 8,
            },
        ),
        (bar, {"type": "key_signature", "key": "D"}),
        (
            bar,
            {
                "type": "time_signature",
                "numerator": 3,
                "denominator": 4,
                "clocks_per_click": 24,
                "notated_32nd_notes_per_beat": 8,
            },
        ),
        (bar + 10080, {"type": "end_of_track"}),  # a quarter note after the last mark
    ]
    melody, chords = absolute(midi.tracks[1]), absolute(midi.tracks[2])
    assert melody[:2] == [
        (0, {"type": "track_name", "name": "Piano"}),
        (0, {"type": "program_change", "program": 0, "channel": 0}),
    ]
    assert chords[:2] == [
        (0, {"type": "track_name", "name": "Acoustic Guitar"}),
        (0, {"type": "program_change", "program": 24, "channel": 1}),
    ]
    notes = [attributes for _, attributes in melody if attributes["type"].startswith("note")]
    assert {(n["channel"], n["velocity"]) for n in notes if n["type"] == "note_on"} == {(0, 90)}
    assert {(n["channel"], n["velocity"]) for n in notes if n["type"] == "note_off"} == {(0, 0)}
    assert {(a["channel"], a["velocity"]) for _, a in chords if a["type"] == "note_on"} == {(1, 60)}
    end = bar + 3 * 10080  # the last note ends with the 3/4 bar
    assert melody[-1] == chords[-1][:1] + melody[-1][1:] == (end + 10080, {"type": "end_of_track"})
    # a chord's notes start together, and a note ends before the next one at its tick starts
    assert [a["note"] for tick, a in chords if tick == bar and a["type"] == "note_on"] == [57, 61, 64]
    assert [a["type"] for tick, a in melody if tick == 5040] == ["note_off", "note_on"]


def test_a_tempo_slower_than_midi_holds_is_its_slowest(tmp_path):
    files = exported(tmp_path, tune("GABc d4|]", extra="Q:1/4=2\n"), ["midi"])
    assert [m.tempo for m in mido.MidiFile(files[".mid"]).tracks[0] if m.type == "set_tempo"] == [0xFFFFFF]
    assert pitches(files[".mid"]) == [G4, A4, B4, C5, D5]


# ---- MusicXML of what music21's own notation pass would change ------------------------------


def test_musicxml_brackets_tuplets_and_ties_notes_of_no_single_note_value(tmp_path):
    from music21 import note, stream

    files = exported(tmp_path, tune("(3GAB c2 d3 B|G5 A3|]"))
    text = files[".musicxml"].read_text()
    assert len(re.findall(r'<tuplet [^>]*type="start"', text)) == 1
    assert len(re.findall(r'<tuplet [^>]*type="stop"', text)) == 1
    part = musicxml(files[".musicxml"]).parts[0]
    second = part.getElementsByClass(stream.Measure)[1]
    written = [(n.pitch.midi, n.quarterLength, n.tie.type if n.tie else None) for n in second.notes]
    assert written[-1] == (A4, 1.5, None)
    assert sum(length for pitch, length, _ in written if pitch == G4) == 2.5
    assert [tie for pitch, _, tie in written if pitch == G4][0] == "start"
    assert not part.recurse().getElementsByClass(note.Rest)
    # the MIDI plays G for 5 eighths, once, whether or not the MusicXML was written first
    assert played(files[".mid"])[-2:] == [(4, G4, Fraction(5, 2)), (Fraction(13, 2), A4, Fraction(3, 2))]


def test_short_bars_are_written_as_they_are_without_padding_rests(tmp_path):
    from music21 import stream

    files = exported(tmp_path, tune("D|:GABc d4|[1 c6 B:|[2 c6|]"))
    score = musicxml(files[".musicxml"])
    measures = score.parts[0].getElementsByClass(stream.Measure)
    assert [m.duration.quarterLength for m in measures] == [0.5, 4, 3.5, 3]
    assert "<rest" not in files[".musicxml"].read_text()


def test_musicxml_of_a_long_tune_has_every_bar_and_ending(tmp_path):
    from music21 import spanner, stream

    files = exported(tmp_path, strains(60), ["musicxml"])
    score = musicxml(files[".musicxml"])
    assert len(score.parts[0].getElementsByClass(stream.Measure)) == 240
    assert len(score.recurse().getElementsByClass(spanner.RepeatBracket)) == 120
    assert len(score.parts[0].recurse().notes) == 60 * 12  # 6 + 4 notes, and one in each ending


# ---- long tunes (issue 18) --------------------------------------------------------------------


def strains(count: int, title="Long") -> str:
    """`count` strains of 8 bars, each repeated with first and second endings, tied across bars."""
    strain = "|:GABc d2B2-|B2cd e4|[1 d8:|[2 G8||"
    return tune("\n".join([strain] * count), title=title)


def test_a_long_tune_plays_every_repeat_and_ending_in_order(tmp_path):
    files = exported(tmp_path, strains(40), ["midi"])
    once = [G4, A4, B4, C5, D5, B4, C5, D5, 76, D5, G4, A4, B4, C5, D5, B4, C5, D5, 76, G4]
    assert pitches(files[".mid"]) == once * 40
    # the tie joins B4 across the bar line: a half note, then a quarter of the next bar
    assert played(files[".mid"])[5] == (Fraction(3), B4, Fraction(2))


def test_count_bars_counts_bars_as_written():
    from abcgen.export import count_bars

    assert count_bars(strains(3)) == 12  # 4 bars a strain, endings included
    assert count_bars(tune('|:"G"GABc !trill!d4|"D"d8:|%|:|\n')) == 2


def test_a_tune_too_long_to_export_is_refused_in_one_line_naming_it(tmp_path, monkeypatch):
    from abcgen import export

    monkeypatch.setattr(export, "MAX_TUNE_BARS", 100)
    abc = strains(30, title="Endless") + "\n" + tune("GABc d4|]", number=2, title="Fine")
    report = export_tunes(abc, tmp_path, ["midi"])
    assert [str(failure) for failure in report.failed] == [
        "X:1 (Endless): it is too long to export (120 bars; the limit is 100): split it into tunes of its parts"
    ]
    assert [path.name for path in report.written] == ["002-fine.mid"]


def test_a_tune_of_too_many_characters_is_refused_before_parsing(tmp_path):
    from abcgen.export import MAX_TUNE_CHARACTERS

    abc = tune("GABc d4|" * (MAX_TUNE_CHARACTERS // 8), title="Huge")
    report = export_tunes(abc, tmp_path, ["midi"])
    assert str(report.failed[0]).startswith("X:1 (Huge): it is too long to export (")


def test_sigterm_during_a_parallel_export_exits_cleanly(tmp_path):
    """No leaked-semaphore warning, no worker left running, no half-written file."""
    import signal
    import subprocess
    import sys
    import time

    many = tmp_path / "many.abc"
    many.write_text("\n".join(tune("|:GABc d2B2|c2A2 G4:|" * 8, number=n, title=f"T{n}") for n in range(1, 400)))
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "abcgen", "export", str(many), "-o", str(out), "-f", "midi", "--jobs", "2", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.glob("*.mid"))) and process.poll() is None:
        assert time.monotonic() < deadline, "no file written in 2 minutes"
        time.sleep(0.1)
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode in (0, 128 + signal.SIGTERM), stderr
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr
    assert not [path for path in out.iterdir() if not path.name.endswith(".mid")]
    deadline = time.monotonic() + 10  # the resource tracker exits once it reads the end of its pipe
    while [pid for pid in children if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (Linux), or none where /proc is missing."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-8-sig"])
def test_the_export_command_reads_latin1_utf16_and_bom_files(tmp_path, encoding):
    from click.testing import CliRunner

    from abcgen.cli import cli

    source = tmp_path / "tune.abc"
    source.write_bytes(tune("GABc d2B2|c2A2 G4|]", title="Café au lait").encode(encoding))
    result = CliRunner().invoke(
        cli, ["export", str(source), "--out-dir", str(tmp_path / "out"), "-f", "musicxml", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "001-cafe-au-lait.musicxml"
    assert "Café au lait" in written.read_text(encoding="utf-8")
