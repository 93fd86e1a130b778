"""Tiny MovieLens folders in each edition's exact byte format, with known bad lines.

Each writer returns the folder; the comments give the 1-based line numbers the tests
assert on.
"""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.write_bytes(text.encode(encoding))


def ml_100k(root: Path) -> Path:
    d = root / "ml-100k"
    d.mkdir()
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    write(d / "u.item", "\n".join([
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{flags(3, 4, 5)}",
        f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{flags(8, 12)}",
        f"3|unknown||||{flags(0)}",
        "4|Broken line|only three",                                  # line 4: malformed
        f"5|Un Chien Andalou|01-Jan-1929||http://x|{flags(0, 8)}",  # year from the release date
    ]) + "\n", "latin-1")
    write(d / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(
        ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
         "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"])) + "\n")
    write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|x|M|writer|32067\n")  # line 3: bad age
    write(d / "u.data", "\n".join([
        "1\t1\t5\t881250949",
        "2\t1\t3\t891717742",
        "1\t2\t4\t881250950",
        "1\t2\t6\t881250951",    # line 4: out of scale
        "1\t99\t3\t881250952",   # line 5: unknown item
        "1\t1\t2\t881250999",    # line 6: duplicate of line 1, later: kept; line 1 rejected
        "7\t1\t3\t881250953",    # line 7: unknown user
        "1\t5\t3.5\t881250954",  # line 8: half star on a whole-star edition
        "1\t5",                  # line 9: malformed
    ]) + "\n")
    return d


def ml_1m(root: Path, with_ratings: bool = True) -> Path:
    d = root / "ml-1m"
    d.mkdir()
    write(d / "movies.dat", "\n".join([
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "2::Misérables, Les (1995)::Drama|Musical",
        "3::Slingshot, The (Kådisbellan ) (1993)::Comedy|Drama",
        "x::Bad id (1990)::Drama",             # line 4: malformed id
        "5::No Genres Here",                   # line 5: malformed (no genres field)
        "2::Duplicate (2000)::Drama",          # line 6: duplicate movie id
    ]) + "\n", "latin-1")
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::99::55117\n")
    if with_ratings:
        write(d / "ratings.dat", "\n".join([
            "1::1::5::978300760",
            "1::2::3::978302109",
            "2::3::4::978301968",
            "2::3::5::978301000",   # line 4: duplicate of line 3 with an older timestamp: rejected
            "1::1::0::978300761",   # line 5: out of scale
            "1::3::x::978300762",   # line 6: malformed rating
        ]) + "\n")
    return d


def ml_10m(root: Path) -> Path:
    d = root / "ml-10M100K"
    d.mkdir()
    write(d / "movies.dat", "\n".join([
        "1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy",
        "2::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance",
        "3::Some Series (2006–2007)::(no genres listed)",
    ]) + "\n")
    write(d / "tags.dat", "\n".join([
        "15::1::pixar::1215184630",
        "20::1::Pixar::1215184631",
        "20::1::fun::1215184632",
        "15::2::paris::1215184633",
        "15::9::ghost::1215184634",          # line 5: unknown item
        "15::2::::1215184635",                 # line 6: empty tag
    ]) + "\n")
    write(d / "ratings.dat", "\n".join([
        "1::1::4.5::838985046",
        "1::2::0.5::838983525",
        "2::3::5::838983392",
        "2::1::5.5::838983421",   # line 4: out of scale
        "2::2::2.25::838983422",  # line 5: not a half step
        "3::2::3::838983423::9",  # line 6: malformed (5 fields)
    ]) + "\n")
    return d


def ml_csv(root: Path, name: str = "ml-latest-small") -> Path:
    d = root / name
    d.mkdir()
    write(d / "README.txt", f"Summary\n=======\n\nThis dataset ({name}) describes 5-star rating activity.\n")
    write(d / "movies.csv", "\n".join([
        "movieId,title,genres",
        '1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy',
        '11,"American President, The (1995)",Comedy|Drama|Romance',
        '27008,From Dusk Till Dawn 2: Texas Blood Money (1999) ,Comedy|Crime|Horror',
        '40697,Babylon 5,Sci-Fi',
        '171749,Death Note: Desu nôto (2006–2007),(no genres listed)',
        '"Quote ""Me"" (2001)",Drama',              # line 7: malformed (2 fields)
        '99,"Say ""Hi"", Bob (2003)",Comedy',
    ]) + "\r\n")
    write(d / "links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n11,0112346,9087\n40697,0105946,\n12345,0000001,1\n")
    write(d / "tags.csv", "\n".join([
        "userId,movieId,tag,timestamp",
        "2,1,pixar,1445714994",
        '2,11,"politics, romance",1445714996',
        "3,1,Pixar,1445714997",
        "3,1,fun,1445714998",
        "3,77,ghost,1445714999",       # line 6: unknown item
    ]) + "\n")
    write(d / "ratings.csv", "\n".join([
        "userId,movieId,rating,timestamp",
        "1,1,4.0,964982703",
        "1,11,4.5,964981247",
        "2,1,3.5,964982224",
        "2,11,7.0,964983815",          # line 5: out of scale
        "2,555,4.0,964982931",         # line 6: unknown item
        "1,1,2.0,964982000",           # line 7: duplicate of line 2, older: rejected
        "3,40697,5.0,964982400",
        "3,40697,1.0,964982400",       # line 9: duplicate of line 8, same time: later line kept
        "three,1,4.0,964982401",       # line 10: malformed user id
        "4,99,1.5",                    # line 11: malformed (3 fields)
        "",                            # line 12: empty line
        "4,99,0.5,964982402",
    ]) + "\n")
    return d
