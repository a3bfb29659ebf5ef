"""The demo corpus's word lists: function words, content words, names and places per language.

Capitalised sentence starts, names, places and German nouns make CAPITALIZED as common as NUMBER and CJK.
"""

from __future__ import annotations


def words(text: str) -> tuple[str, ...]:
    """A word list written compactly as one space-separated string."""
    return tuple(text.split())


LATIN = {
    "en": {
        "function": words(
            "the a an of to in on at for with and but or from by about into over after before while because if "
            "when that this these those it we they you he she our their my"
        ),
        "content": words(
            "house river city morning report meeting budget weather coffee train ticket window garden market "
            "street school teacher student doctor engine server network update customer invoice contract delivery "
            "kitchen festival concert museum library bridge mountain forest quickly slowly carefully yesterday "
            "tomorrow today again always never often usually bought visited opened closed signed sent received "
            "cooked painted repaired booked planned moved finished started discussed approved rejected walked "
            "waited found lost green quiet busy cheap expensive early late small large happy tired new old final"
        ),
        "names": words(
            "Alice Marcus Olivia James Sophia Daniel Emma Noah Grace Henry Chloe Oliver Ruby Thomas Amelia Jack "
            "Isla William Harper Lucas Microsoft Google Amazon Monday Friday January March August December"
        ),
        "places": words(
            "London Manchester Boston Chicago Toronto Sydney Dublin Edinburgh Seattle Denver Texas California "
            "Europe Africa Thames"
        ),
    },
    "fr": {
        "function": words(
            "le la les un une des du de au aux et mais ou donc car dans sur sous avec pour par chez vers que qui "
            "où nous vous ils elles il elle on très déjà aussi"
        ),
        "content": words(
            "maison rivière ville matin réunion élève école été hiver château garçon fenêtre marché rue médecin "
            "café gâteau fête forêt théâtre hôpital bibliothèque voiture achète visité ouvert fermé signé envoyé "
            "reçu préparé réparé réservé décidé commencé terminé attendu trouvé perdu vert calme cher léger "
            "français agréable petit grand heureux fatigué nouveau vieux"
        ),
        "names": words(
            "Élise Camille Hélène François Mathéo Léa Chloé Jérôme Amélie Benoît Zoé Noël Renault Lundi Vendredi "
            "Janvier Décembre"
        ),
        "places": words(
            "Paris Lyon Marseille Québec Genève Bordeaux Nantes Montréal Bruxelles Provence Normandie Seine Loire"
        ),
    },
    "de": {
        "function": words(
            "der die das ein eine und aber oder denn mit für von zu im am auf über unter nach vor bei aus wir ihr "
            "sie er es ich sehr schon auch noch nicht"
        ),
        "content": words(
            "Haus Straße Stadt Morgen Bericht Sitzung Wetter Kaffee Zug Fahrkarte Fenster Garten Markt Schule "
            "Lehrer Mädchen Größe Übung Brücke Wald Bäckerei Rechnung Lieferung Küche Frühstück Bürgermeister "
            "Änderung gekauft besucht geöffnet geschlossen unterschrieben geschickt bekommen gekocht repariert "
            "gebucht geplant gewartet gefunden verloren grün ruhig schön teuer billig früh spät klein groß "
            "glücklich müde neu alt"
        ),
        "names": words(
            "Jürgen Müller Schröder Lukas Sophie Maximilian Günther Käthe Jörg Anneliese Siemens Montag Freitag "
            "Januar Dezember"
        ),
        "places": words("Berlin München Köln Hamburg Düsseldorf Zürich Wien Dresden Nürnberg Österreich Bayern Rhein"),
    },
    "es": {
        "function": words(
            "el la los las un una de del al y pero o con sin para por en sobre entre que quien donde nosotros "
            "ellos ella él muy ya también"
        ),
        "content": words(
            "casa río ciudad mañana reunión niño niña año corazón canción árbol jardín mercado calle escuela "
            "médico café montaña lápiz informe camión pájaro compró visitó abrió cerró firmó envió recibió cocinó "
            "reparó reservó empezó terminó esperó encontró perdió verde tranquilo barato caro rápido difícil "
            "pequeño grande feliz cansado nuevo viejo"
        ),
        "names": words(
            "José María Martínez Lucía Andrés Ramón Sofía Álvaro Inés Íñigo Begoña Óscar Telefónica Lunes Viernes "
            "Enero Diciembre"
        ),
        "places": words("Madrid Barcelona Sevilla Málaga Córdoba Bogotá México Perú Asunción Cádiz Andalucía Ebro"),
    },
    "ru": {
        "function": words("и в на с по из за для от до но или что как мы вы они он она это очень уже тоже ещё не"),
        "content": words(
            "дом река город утро отчёт встреча погода кофе поезд билет окно сад рынок улица школа учитель врач "
            "книга письмо работа неделя зима лето купил посетил открыл закрыл подписал отправил получил "
            "приготовил ждал нашёл зелёный тихий дорогой дешёвый ранний поздний маленький большой новый старый"
        ),
        "names": words(
            "Иван Наталья Сергей Ольга Дмитрий Анна Михаил Екатерина Алексей Татьяна Яндекс Понедельник Пятница "
            "Январь Декабрь"
        ),
        "places": words("Москва Петербург Казань Новосибирск Екатеринбург Самара Волга Сибирь Урал Россия"),
    },
}
ARABIC = {
    "function": words("في من إلى على مع عن و أو لكن هذا هذه نحن هم هو هي قد"),
    "content": words(
        "مرحبا كتاب مدينة بيت نهر صباح اجتماع تقرير طقس قهوة قطار مدرسة طبيب سوق شارع حديقة رسالة عمل أسبوع "
        "شتاء صيف اشترى زار فتح أغلق أرسل جميل كبير صغير جديد قديم"
    ),
    "names": words("محمد فاطمة أحمد ليلى عمر مريم القاهرة دبي الرياض بيروت عمان"),
}
CHINESE = words(
    "我们 你们 他们 今天 明天 昨天 天气 很好 北京 上海 广州 学习 工作 会议 报告 公司 朋友 老师 学生 医生 城市 河流 "
    "早上 晚上 咖啡 火车 票 窗户 花园 市场 街道 学校 喜欢 看见 买了 去了 来了 开始 完成 问题 时间 经济 发展 中国 世界 "
    "电脑 手机 大家 非常 已经 可以 需要 因为 所以 但是"
)
JAPANESE = words(
    "こんにちは ありがとう 東京 大阪 京都 日本語 学生 先生 会社 会議 天気 今日 明日 昨日 電車 切符 窓 庭 市場 学校 "
    "病院 コーヒー カメラ テレビ パソコン メール ホテル レストラン です ました ます して いる ある から まで ので けど "
    "とても もう 行きました 食べました 見ました 始めます"
)
JAPANESE_PARTICLES = words("は が を に で と も の へ")
KOREAN = words(
    "안녕하세요 감사합니다 서울 부산 한국어 학생 선생님 회사 회의 날씨 오늘 내일 어제 기차 표 창문 정원 시장 학교 "
    "병원 커피 친구 도시 강 아침 저녁 책 일 주 겨울 여름 샀어요 갔어요 왔어요 봤어요 시작했어요 끝났어요 좋아요 정말 "
    "아주 벌써 그리고 하지만 그래서"
)
EMOJI = ("😀", "🎉", "👍", "🚀", "❤️", "🙂", "🔥", "✅", "📈", "🌍")
CONTROL_CHARS = ("\t", "\x00", "\x1b", "\u200b", "\u200f", "\u200e", "\r\n", "\x07")
LANGUAGE_WEIGHTS = {
    "en": 0.30,
    "fr": 0.09,
    "de": 0.09,
    "es": 0.09,
    "ru": 0.10,
    "ar": 0.07,
    "zh": 0.08,
    "ja": 0.08,
    "ko": 0.06,
    "mixed": 0.04,
}
SENTENCE_END = {"latin": (". ", ". ", ". ", "! ", "? ", "; "), "cjk": ("。", "！", "？"), "ar": (". ", "؟ ")}
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
